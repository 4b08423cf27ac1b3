"""The protocol every scene source follows, and the pieces of STAC item handling they share."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Protocol

import pystac
import shapely

from pipeline.aoi import utm_epsg

log = logging.getLogger(__name__)

S2_COLLECTION = "sentinel-2-l2a"
DEM_COLLECTION = "cop-dem-glo-30"
# Sentinel-2 processing baseline 04.00 (scenes from 25 Jan 2022) adds 1000 to every reflectance DN.
BASELINE_OFFSET_FROM = "04.00"


@dataclass
class SceneSearch:
    """What a search found: usable scenes, DEM tiles, and scenes set aside with the reason."""

    scenes: list[pystac.Item]
    dem: list[pystac.Item] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"id": ..., "reason": ...}


class Source(Protocol):
    name: str

    def search(self, aoi_wgs84: shapely.Geometry, start: date, end: date, max_cloud_cover: float) -> SceneSearch:
        """Scenes intersecting the AOI within [start, end] (both days included)."""
        ...


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (
        datetime.combine(start, time.min, tzinfo=timezone.utc),
        datetime.combine(end, time.max, tzinfo=timezone.utc),
    )


def item_datetime(item: pystac.Item) -> datetime:
    dt = item.datetime or pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def scale_offset(item: pystac.Item, asset_key: str) -> tuple[float, float]:
    """DN -> reflectance scale and offset of one asset.

    ``raster:bands`` is read first: it is the asset's own statement (and Sentinel Hub's harmonised
    values legitimately say offset 0 on 04.00 scenes). Where it says nothing, the processing baseline
    decides: -0.1 from 04.00 on, else 0.
    """
    bands = item.assets[asset_key].extra_fields.get("raster:bands") or [{}]
    rb = bands[0] if isinstance(bands[0], dict) else {}
    scale = rb.get("scale", 0.0001)
    if "offset" in rb:
        offset = rb["offset"]
    else:
        baseline = str(item.properties.get("s2:processing_baseline") or "")
        if baseline:
            offset = -0.1 if baseline >= BASELINE_OFFSET_FROM else 0.0
        else:
            # no flag at all: the 04.00 baseline began on 25 Jan 2022 for every new scene
            offset = -0.1 if item_datetime(item).date() >= date(2022, 1, 25) else 0.0
    return float(scale), float(offset)


def item_epsg(item: pystac.Item) -> int | None:
    p = item.properties
    if p.get("proj:epsg"):
        return int(p["proj:epsg"])
    code = p.get("proj:code") or ""
    if code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


_PRODUCT_ORBIT = re.compile(r"_R(\d{3})_")
_PRODUCT_TILE = re.compile(r"_T(\d{2}[A-Z]{3})_")


def item_orbit(item: pystac.Item) -> str:
    """Relative orbit: ``sat:relative_orbit`` (Planetary Computer, our simulator), else the R### of
    the product name (Earth Search v1 carries ``s2:product_uri`` but no orbit property)."""
    p = item.properties
    if p.get("sat:relative_orbit") is not None:
        return str(int(p["sat:relative_orbit"]))
    m = _PRODUCT_ORBIT.search(str(p.get("s2:product_uri") or ""))
    return str(int(m.group(1))) if m else ""


def item_tile(item: pystac.Item) -> str:
    p = item.properties
    if p.get("s2:mgrs_tile"):
        return str(p["s2:mgrs_tile"])
    if str(p.get("grid:code") or "").startswith("MGRS-"):
        return p["grid:code"][5:]
    if p.get("mgrs:utm_zone") and p.get("mgrs:latitude_band") and p.get("mgrs:grid_square"):
        return f"{int(p['mgrs:utm_zone']):02d}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
    m = _PRODUCT_TILE.search(str(p.get("s2:product_uri") or ""))
    return m.group(1) if m else item.id


def _newness(item: pystac.Item) -> tuple:
    p = item.properties
    return (
        str(p.get("s2:processing_baseline") or ""),
        str(p.get("s2:generation_time") or p.get("updated") or ""),
        item.id,
    )


def deduplicate(
    items: list[pystac.Item], aoi_wgs84: shapely.Geometry | None = None, aoi_epsg: int | None = None
) -> tuple[list[pystac.Item], list[dict]]:
    """Drop repeated acquisitions, keeping one reading of each.

    1. Reprocessing: ESA re-issues granules under newer processing baselines, and the archives keep
       both (Earth Search's ``_0_``/``_1_`` ids). Same platform, tile, orbit and sensing second: keep
       the newest baseline (then the newest generation time).
    2. Overlapping tiles: one overpass is cut into MGRS tiles that overlap by ~10 km (and across UTM
       zones). When one tile of an overpass covers the whole AOI, the others add nothing but bytes;
       keep that one (preferring the AOI's own UTM zone). Otherwise all are kept and mosaicked.
    """
    groups: dict[tuple, list[pystac.Item]] = {}
    for it in items:
        key = (
            str(it.properties.get("platform") or ""),
            item_tile(it),
            item_orbit(it),
            item_datetime(it).replace(microsecond=0).isoformat(),
        )
        groups.setdefault(key, []).append(it)
    kept, dropped = [], []
    for group in groups.values():
        group.sort(key=_newness, reverse=True)
        kept.append(group[0])
        dropped += [
            {
                "id": it.id,
                "reason": f"superseded by {group[0].id} (processing baseline "
                f"{group[0].properties.get('s2:processing_baseline', '?')})",
            }
            for it in group[1:]
        ]
    if aoi_wgs84 is not None:
        if aoi_epsg is None:
            c = aoi_wgs84.centroid
            aoi_epsg = utm_epsg(c.x, c.y)
        passes: dict[tuple, list[pystac.Item]] = {}
        for it in kept:
            overpass = (str(it.properties.get("platform") or ""), item_orbit(it), item_datetime(it).date().isoformat())
            passes.setdefault(overpass, []).append(it)
        kept = []
        for group in passes.values():
            covering = [it for it in group if it.geometry and shapely.geometry.shape(it.geometry).covers(aoi_wgs84)]
            if len(group) > 1 and covering and group[0].properties.get("platform"):
                covering.sort(key=lambda it: (item_epsg(it) != aoi_epsg, it.id))
                keep = covering[0]
                kept.append(keep)
                dropped += [
                    {"id": it.id, "reason": f"same overpass as {keep.id}, which covers the whole AOI"}
                    for it in group
                    if it is not keep
                ]
            else:
                kept += group
    kept.sort(key=lambda it: (item_datetime(it), it.id))
    return kept, dropped
