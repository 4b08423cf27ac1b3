"""Lazy loading of Sentinel-2 L2A items onto the AOI grid, shared by every source.

odc-stac does the reading: it turns STAC items straight into dask-backed arrays on a given GeoBox,
reprojects scenes from any UTM zone or tile, mosaics same-day tiles (``groupby="solar_day"``) and
resamples per band, all without a GDAL VRT step. It does not apply per-scene scale/offset, which
is what we want: the 04.00 baseline offset differs between scenes, so it is applied here, per scene.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import odc.stac
import pystac
import rasterio
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.errors import NoScenesError, SourceError
from pipeline.sources.base import item_datetime, scale_offset

log = logging.getLogger(__name__)

SCL = "scl"


def probe_asset(href: str, want_dtype: str) -> str | None:
    """Why an asset cannot be used, or None. Reads the file's header and its last block, so a
    truncated download (header intact, tail missing) is caught before the expensive load."""
    try:
        with rasterio.open(href) as src:
            if src.count < 1:
                return "no bands"
            if src.dtypes[0] != want_dtype:
                return f"dtype {src.dtypes[0]}, want {want_dtype}"
            if src.crs is None:
                return "no CRS"
            windows = [w for _, w in src.block_windows(1)]
            src.read(1, window=windows[-1])
            src.read(1, window=windows[0])
    except rasterio.RasterioIOError as e:
        return f"unreadable ({str(e).splitlines()[0][:160]})"
    except Exception as e:  # noqa: BLE001 - any failure to read makes the scene unusable
        return f"unreadable ({type(e).__name__}: {str(e)[:160]})"
    return None


def usable_scenes(items: list[pystac.Item], bands: list[str], probe: bool = True,
                  workers: int = 8) -> tuple[list[pystac.Item], list[dict]]:
    """Split items into those whose assets for ``bands`` all exist (and, with ``probe``, read), and
    those skipped (with why). Probing opens every file: worth it only once a load has failed."""

    def check(item):
        missing = [b for b in bands if b not in item.assets]
        if missing:
            return f"missing assets {missing}"
        for b in bands if probe else ():
            why = probe_asset(item.assets[b].get_absolute_href(), "uint8" if b == SCL else "uint16")
            if why:
                return f"{b}: {why}"
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(check, items))
    good = [it for it, why in zip(items, reasons) if why is None]
    skipped = [{"id": it.id, "reason": why} for it, why in zip(items, reasons) if why is not None]
    for s in skipped:
        log.warning("skipping scene %s: %s", s["id"], s["reason"])
    return good, skipped


def solar_day(item: pystac.Item) -> str:
    """The local solar date of an acquisition, as odc-stac groups tiles of one overpass."""
    lon = shapely.geometry.shape(item.geometry).centroid.x if item.geometry else 0.0
    return (item_datetime(item) + timedelta(hours=lon / 15.0)).date().isoformat()


def load_reflectance(items: list[pystac.Item], grid: GeoBox, bands: list[str], chunk_px: int) -> xr.Dataset:
    """Surface reflectance (float32, NaN where no data) of ``bands`` plus ``scl`` (uint8), dims
    (time, y, x), one time step per solar day, dask-backed with one scene per chunk in time."""
    if not items:
        raise NoScenesError("no usable scene left to load: see the skipped scenes in run.json")
    days = sorted({solar_day(it) for it in items})
    by_day = {d: [it for it in items if solar_day(it) == d] for d in days}
    ds = odc.stac.load(
        items, bands=[*bands, SCL], geobox=grid, groupby="solar_day",
        chunks={"time": 1, "y": chunk_px, "x": chunk_px},
        # SCL is a class map: nearest keeps each 20 m class on exactly its 2x2 10 m pixels.
        resampling={SCL: "nearest", "*": "bilinear"},
        fail_on_error=True,
    )
    if ds.sizes["time"] != len(days):
        raise SourceError(f"odc-stac grouped {len(items)} scenes into {ds.sizes['time']} days, expected {len(days)}")
    out = {}
    for b in bands:
        so = [[scale_offset(it, b) for it in by_day[d]] for d in days]
        for d, pairs in zip(days, so):
            if len(set(pairs)) > 1:
                log.warning("tiles of %s disagree on %s scale/offset %s; using the first", d, b, pairs)
        scale = xr.DataArray(np.array([p[0][0] for p in so], np.float32), dims="time")
        offset = xr.DataArray(np.array([p[0][1] for p in so], np.float32), dims="time")
        dn = ds[b]
        out[b] = (dn.astype(np.float32) * scale + offset).where(dn != 0).astype(np.float32)
    out[SCL] = ds[SCL].astype(np.uint8)
    res = xr.Dataset(out, coords={"time": ds.time, "y": ds.y, "x": ds.x})
    res = res.assign_coords(scene_ids=("time", [",".join(it.id for it in by_day[d]) for d in days]))
    res.attrs["crs"] = str(grid.crs)
    return res


def load_dem(items: list[pystac.Item], grid: GeoBox) -> xr.DataArray | None:
    """Elevation (float32 m) on the AOI grid: GLO-30 tiles arrive in EPSG:4326 at 1 arc-second and are
    mosaicked and reprojected here, once, with bilinear resampling."""
    if not items:
        return None
    ds = odc.stac.load(items, bands=["data"], geobox=grid, groupby="id", resampling="bilinear", dtype="float32")
    dem = ds["data"].max("time") if ds.sizes.get("time", 1) > 1 else ds["data"].squeeze("time", drop=True)
    nodata = ds["data"].attrs.get("nodata")
    if nodata is not None and not np.isnan(nodata):
        dem = dem.where(dem != nodata)
    return dem.astype(np.float32)
