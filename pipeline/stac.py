"""A run as STAC, for catalogue tools (pystac-client, QGIS's STAC browser, stac-browser): ``item.json`` in
the run dir describes the run (the AOI, the period, every output as an asset with its checksum) and
``<out>.collection.json`` beside it is the AOI's Collection, linking the run's Item. Both are derived
from run.json, so they never disagree with it, and are rewritten whenever it is."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pystac

from pipeline import export

ITEM = "item.json"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
MEDIA_TYPES = {
    ".gpkg": "application/geopackage+sqlite3",
    ".csv": "text/csv",
    ".tif": pystac.MediaType.COG,
    ".html": pystac.MediaType.HTML,
    ".json": pystac.MediaType.JSON,
    ".geojson": pystac.MediaType.GEOJSON,
    ".png": pystac.MediaType.PNG,
    ".svg": "image/svg+xml",
    ".sld": "application/vnd.ogc.sld+xml",
}
ROLES = {".gpkg": ["data"], ".csv": ["data"], ".tif": ["data"], ".geojson": ["data"], ".png": ["overview"]}
LICENSE = "CC-BY-4.0"  # the run's outputs; the Sentinel-2 data they come from are Copernicus open data


def collection_path(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.collection.json"


def run_item(manifest: dict, run_dir_name: str) -> pystac.Item:
    """The run's Item from its run.json (``manifest``): hrefs relative to the run dir."""
    period = manifest["config"]["period"]
    start, end = (datetime.fromisoformat(f"{period[k]}T00:00:00+00:00") for k in ("start", "end"))
    geometry = manifest["aoi_geometry"]
    item = pystac.Item(
        id=f"{manifest['aoi']}-{manifest['created'][:19].replace(':', '')}",
        geometry=geometry,
        bbox=list(pystac.utils.geometry_to_bbox(geometry)),
        datetime=None,
        start_datetime=start,
        end_datetime=end.replace(hour=23, minute=59, second=59),
        properties={
            "title": f"{manifest['aoi']}: rare-earth leaching sites, {period['start']} to {period['end']}",
            "created": manifest["created"],
            "license": LICENSE,
            "constellation": "sentinel-2",
            "proj:code": manifest["grid"]["crs"],
            "proj:shape": manifest["grid"]["shape"],
            "proj:transform": manifest["grid"]["transform"],
            "processing:software": {"kachin-watch": manifest.get("code_version") or "unknown"},
            "processing:lineage": f"{manifest['n_scenes_used']} Sentinel-2 L2A scenes from {manifest['source']}",
        },
        stac_extensions=[PROJECTION, FILE, PROCESSING],
        collection=manifest["aoi"],
    )
    for name, digest in manifest["outputs"].items():
        suffix = Path(name).suffix
        item.add_asset(
            name.replace("/", "_").replace(".", "_"),
            pystac.Asset(
                href=f"./{name}",
                media_type=MEDIA_TYPES.get(suffix),
                roles=["visual"] if name.startswith("evidence/") else ROLES.get(suffix, ["metadata"]),
                extra_fields={"file:checksum": "1220" + digest["sha256"], "file:size": digest["bytes"]},
            ),
        )
    item.add_asset(
        "run", pystac.Asset(href=f"./{export.MANIFEST}", media_type=pystac.MediaType.JSON, roles=["metadata"])
    )
    item.links = [
        pystac.Link("collection", f"../{run_dir_name}.collection.json", pystac.MediaType.JSON),
        pystac.Link("parent", f"../{run_dir_name}.collection.json", pystac.MediaType.JSON),
    ]
    return item


def aoi_collection(item: pystac.Item, run_dir_name: str) -> pystac.Collection:
    """The AOI's Collection: its extent is the run's, and it links the run's Item."""
    collection = pystac.Collection(
        id=item.collection_id or run_dir_name,
        description=f"Runs of the Kachin rare-earth mining watch over the AOI {item.collection_id}",
        extent=pystac.Extent(
            pystac.SpatialExtent([list(item.bbox or [])]),
            pystac.TemporalExtent([[item.common_metadata.start_datetime, item.common_metadata.end_datetime]]),
        ),
        license=LICENSE,
        title=item.collection_id,
    )
    collection.links = [pystac.Link("item", f"./{run_dir_name}/{ITEM}", pystac.MediaType.GEOJSON)]
    return collection


def write_item(run_dir: Path, name: str | None = None) -> Path:
    """``item.json`` into ``run_dir`` (a run dir, or its staged copy, whose final name is ``name``),
    from its run.json."""
    run_dir = Path(run_dir)
    item = run_item(export.read_manifest(run_dir), name or run_dir.name)
    return export.write_json(run_dir / ITEM, item.to_dict(transform_hrefs=False))


def write_collection(out: Path) -> Path:
    """The AOI's Collection beside the run dir ``out``, from its Item."""
    out = Path(out)
    item = pystac.Item.from_dict(json.loads((out / ITEM).read_text()))
    return export.write_json(collection_path(out), aoi_collection(item, out.name).to_dict(transform_hrefs=False))
