"""The protocol every scene source follows, and the pieces of STAC item handling they share."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Protocol

import pystac
import shapely

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
    return (datetime.combine(start, time.min, tzinfo=timezone.utc),
            datetime.combine(end, time.max, tzinfo=timezone.utc))


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
