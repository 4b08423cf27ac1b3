"""What the tests share: spectra of the landscape's surfaces, tiny contract-3 catalogs written to tmp_path
(independent of the simulator), the contract checkers, a run's fingerprint and the one-line error check.

They make catalogs the way another tool might (proj:code rather than proj:epsg, GTiff rather than
COG, optional raster:bands), so the loader is tested on more than our own simulator's output.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyogrio
import pystac
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box, mapping

from pipeline import export
from pipeline.config import RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]

BANDS_10 = ["blue", "green", "red", "nir"]
BANDS_20 = ["rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22"]

FOREST = {
    "blue": 0.03,
    "green": 0.06,
    "red": 0.035,
    "rededge1": 0.09,
    "rededge2": 0.22,
    "rededge3": 0.28,
    "nir": 0.32,
    "nir08": 0.33,
    "swir16": 0.15,
    "swir22": 0.07,
}
LATERITE = {
    "blue": 0.07,
    "green": 0.11,
    "red": 0.18,
    "rededge1": 0.22,
    "rededge2": 0.24,
    "rededge3": 0.25,
    "nir": 0.26,
    "nir08": 0.27,
    "swir16": 0.33,
    "swir22": 0.26,
}
MILKY_WATER = {
    "blue": 0.12,
    "green": 0.16,
    "red": 0.15,
    "rededge1": 0.12,
    "rededge2": 0.08,
    "rededge3": 0.06,
    "nir": 0.05,
    "nir08": 0.04,
    "swir16": 0.015,
    "swir22": 0.01,
}
RIVER_WATER = {
    "blue": 0.06,
    "green": 0.08,
    "red": 0.07,
    "rededge1": 0.06,
    "rededge2": 0.035,
    "rededge3": 0.03,
    "nir": 0.025,
    "nir08": 0.02,
    "swir16": 0.01,
    "swir22": 0.008,
}
ALGAL_WATER = {
    "blue": 0.04,
    "green": 0.09,
    "red": 0.05,
    "rededge1": 0.06,
    "rededge2": 0.06,
    "rededge3": 0.06,
    "nir": 0.06,
    "nir08": 0.05,
    "swir16": 0.015,
    "swir22": 0.01,
}
MUD = {
    "blue": 0.08,
    "green": 0.10,
    "red": 0.12,
    "rededge1": 0.13,
    "rededge2": 0.14,
    "rededge3": 0.15,
    "nir": 0.16,
    "nir08": 0.16,
    "swir16": 0.18,
    "swir22": 0.14,
}


def tools_dir() -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "tools"
    return shared if (shared / "check_run.py").is_file() else Path(__file__).parent / "contract_tools"


def run_checker(name: str, arg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tools_dir() / name), str(arg)], capture_output=True, text=True)


def write_tif(path: Path, data: np.ndarray, transform: Affine, epsg: int, nodata=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=f"EPSG:{epsg}",
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        dst.write(data, 1)


def write_catalog(
    root: Path,
    scenes: list[dict],
    *,
    bounds=(436000.0, 2841000.0, 437000.0, 2842000.0),
    epsg: int = 32647,
    dem: np.ndarray | None = None,
) -> Path:
    """Write a contract-3 catalog. Each scene dict: ``datetime`` (datetime), ``refl`` (band -> 10 m
    float array of surface reflectance, shape of the bounds at 10 m), optional ``scl`` (20 m uint8,
    default 4), ``baseline`` (default from the date), ``raster_bands`` (default True) and ``epsg``."""
    root.mkdir(parents=True, exist_ok=True)
    cat = pystac.Catalog("test", "test catalog")
    col = pystac.Collection(
        "sentinel-2-l2a",
        "S2 L2A",
        pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])),
    )
    cat.add_child(col)
    left, bottom, right, top = bounds
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    ll = box(*to_ll.transform_bounds(left, bottom, right, top))
    for i, sc in enumerate(scenes):
        when: datetime = sc["datetime"].replace(tzinfo=timezone.utc)
        baseline = sc.get("baseline") or ("04.00" if when >= datetime(2022, 1, 25, tzinfo=timezone.utc) else "02.14")
        offset = -0.1 if baseline >= "04.00" else 0.0
        sid = f"S2A_47RQL_{when:%Y%m%d}_{i}_L2A"
        item = pystac.Item(
            sid,
            mapping(ll),
            list(ll.bounds),
            when,
            {
                "eo:cloud_cover": float(sc.get("cloud_cover", 5.0)),
                "proj:code": f"EPSG:{epsg}",
                "s2:processing_baseline": baseline,
                "platform": "sentinel-2a",
            },
            collection="sentinel-2-l2a",
        )
        for band in BANDS_10 + BANDS_20:
            res = 10 if band in BANDS_10 else 20
            r = np.asarray(sc["refl"][band], np.float32)
            if res == 20:
                r = r.reshape(r.shape[0] // 2, 2, r.shape[1] // 2, 2).mean(axis=(1, 3))
            dn = np.where(np.isnan(r), 0, np.clip(np.round((r - offset) / 1e-4), 1, 65535)).astype(np.uint16)
            tif = root / sid / f"{band}.tif"
            write_tif(tif, dn, Affine(res, 0, left, 0, -res, top), epsg)
            extra = (
                {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": offset}]}
                if sc.get("raster_bands", True)
                else {}
            )
            item.add_asset(
                band, pystac.Asset(str(tif), media_type=pystac.MediaType.GEOTIFF, roles=["data"], extra_fields=extra)
            )
        h, w = int((top - bottom) / 20), int((right - left) / 20)
        scl = np.asarray(sc.get("scl", np.full((h, w), 4, np.uint8)), np.uint8)
        write_tif(root / sid / "scl.tif", scl, Affine(20, 0, left, 0, -20, top), epsg)
        item.add_asset(
            "scl",
            pystac.Asset(
                str(root / sid / "scl.tif"),
                media_type=pystac.MediaType.GEOTIFF,
                roles=["data"],
                extra_fields={"raster:bands": [{"nodata": 0, "data_type": "uint8"}]},
            ),
        )
        col.add_item(item)
    if dem is not None:
        dcol = pystac.Collection(
            "cop-dem-glo-30",
            "DEM",
            pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])),
        )
        cat.add_child(dcol)
        tif = root / "dem" / "dem.tif"
        write_dem_4326(tif, dem, bounds, epsg)
        it = pystac.Item(
            "dem-1",
            mapping(ll),
            list(ll.bounds),
            datetime(2021, 1, 1, tzinfo=timezone.utc),
            {},
            collection="cop-dem-glo-30",
        )
        it.add_asset("data", pystac.Asset(str(tif), media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
        dcol.add_item(it)
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def write_dem_4326(path: Path, dem_utm: np.ndarray, bounds, epsg: int):
    """Warp a DEM given on the UTM 10 m grid of ``bounds`` to EPSG:4326 at 1 arc-second, as GLO-30 ships."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    left, bottom, right, top = bounds
    src_t = Affine(10, 0, left, 0, -10, top)
    res = 1 / 3600
    t, w, h = calculate_default_transform(
        f"EPSG:{epsg}", "EPSG:4326", dem_utm.shape[1], dem_utm.shape[0], left, bottom, right, top, resolution=res
    )
    dst = np.zeros((h, w), np.float32)
    reproject(
        dem_utm.astype(np.float32),
        dst,
        src_transform=src_t,
        src_crs=f"EPSG:{epsg}",
        dst_transform=t,
        dst_crs="EPSG:4326",
        resampling=Resampling.bilinear,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", height=h, width=w, count=1, dtype="float32", crs="EPSG:4326", transform=t
    ) as ds:
        ds.write(dst, 1)


def uniform(spec: dict, shape) -> dict:
    return {b: np.full(shape, v, np.float32) for b, v in spec.items()}


def write_aoi_file(path: Path, bounds, epsg=32647, inset=100.0) -> Path:
    left, bottom, right, top = bounds
    to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
    g = box(*to_ll.transform_bounds(left + inset, bottom + inset, right - inset, top - inset))
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"name": path.stem}, "geometry": mapping(g)}],
            }
        )
    )
    return path


def subprocess_env() -> dict:
    """The environment for ``python -m pipeline`` in a subprocess: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def fingerprint(run: Path) -> dict:
    """What must be identical between runs: the table's bytes, the features, the rasters' bytes."""
    fp = {"csv": (run / export.SUMMARY).read_bytes()}
    for layer in export.LAYERS:
        df = pyogrio.read_dataframe(run / export.GPKG, layer=layer)
        fp[layer] = (df.drop(columns="geometry").to_json(), [g.wkb for g in df.geometry])
    for tif in sorted(run.glob("*.tif")):
        fp[tif.name] = tif.read_bytes()
    return fp


def run_args(f, *, quiet: bool = True, **kw) -> list[str]:
    """``run`` arguments for a fixture catalog ``f`` (tiny_catalog's dict) over 2021-2023, with overrides
    (``set="compute.chunk_px=64"`` gives ``--set compute.chunk_px=64``)."""
    args = {
        "aoi": f["aoi"],
        "source": "local",
        "catalog": f["catalog"],
        "start": "2021-01-01",
        "end": "2023-12-31",
        "out": f["root"] / "run",
        **kw,
    }
    return ["run", *(["-q"] if quiet else []), *[str(x) for k, v in args.items() for x in (f"--{k}", v)]]


def pipeline_argv(f, **kw) -> list[str]:
    """``python -m pipeline run`` over a fixture catalog, for a subprocess (``run_args``' overrides)."""
    return [sys.executable, "-m", "pipeline", *run_args(f, **kw)]


def catalog_config(f, out: Path | None = None, **settings) -> RunConfig:
    """The run config of a fixture catalog ``f`` over 2021-2023 (dotted ``settings`` override)."""
    return load_config(
        None,
        {
            "aoi": f["aoi"],
            "source.catalog": f["catalog"],
            "period.start": "2021-01-01",
            "period.end": "2023-12-31",
            "out": out if out is not None else f["root"] / "run",
            **settings,
        },
    )


def assert_one_line_error(code, err, *words):
    """A failure exits non-zero with exactly one ``error:`` line, no traceback, naming ``words``."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def _bounds(blob) -> tuple:
    """Bounds of a GeoPackage geometry blob: an 8-byte header, an envelope of 0, 4, 6 or 8 doubles, WKB."""
    doubles = {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}[(blob[3] >> 1) & 7]
    return shapely.from_wkb(bytes(blob[8 + 8 * doubles :])).bounds


def edit_attributes(gpkg, sql: str, *params) -> None:
    """An attribute edit as QGIS makes it: SQLite with the GeoPackage functions that the spatial index's
    triggers call."""
    con = sqlite3.connect(gpkg)
    con.create_function("ST_IsEmpty", 1, lambda blob: 0 if blob else 1)
    for i, name in enumerate(("ST_MinX", "ST_MinY", "ST_MaxX", "ST_MaxY")):
        con.create_function(name, 1, lambda blob, i=i: _bounds(blob)[i])
    with con:
        con.execute(sql, params)
    con.close()
