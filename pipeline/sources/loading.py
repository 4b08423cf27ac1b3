"""Reading Sentinel-2 L2A items onto the AOI grid, shared by every source.

Two ways, one meaning. The count stage reads block windows itself (``overpasses``, ``read_overpass``):
each task reads the window it counts, straight from the COGs (a plain window read on the AOI's
lattice; GDAL warps the window for another UTM zone), so no reflectance cube is ever built.
``load_reflectance`` is the lazy xarray cube for analysts and the reference the count stage is
tested against: odc-stac turns the items into dask arrays on the grid, reprojecting any UTM zone,
mosaicking same-day tiles (``groupby="solar_day"``) and resampling per band. Neither applies a
product-wide scale/offset: the 04.00 baseline offset differs between scenes, so it is applied per scene.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
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


def declared_problem(asset: pystac.Asset, want_dtype: str) -> str | None:
    """What the asset's ``raster:bands`` says that we cannot read as contract-3 DN: another data type
    (a float32 reflectance product read as uint16 DN would be silently wrong), or a NaN nodata."""
    bands = asset.extra_fields.get("raster:bands") or [{}]
    rb = bands[0] if isinstance(bands[0], dict) else {}
    dt = rb.get("data_type")
    if dt is not None and str(dt) != want_dtype:
        return f"raster:bands data_type {dt}, want {want_dtype} (not Sentinel-2 L2A DN)"
    nodata = rb.get("nodata")
    if isinstance(nodata, float) and np.isnan(nodata):
        return f"raster:bands nodata NaN on a {want_dtype} band (contract 3: nodata DN is 0)"
    return None


def header_problem(href: str, want_dtype: str) -> str | None:
    """The file's data type from its header only (one small read): cheap enough for every asset."""
    try:
        with rasterio.open(href) as src:
            if src.dtypes[0] != want_dtype:
                return f"file dtype {src.dtypes[0]}, want {want_dtype}"
            if src.nodata is not None and np.isnan(src.nodata):
                return f"file nodata NaN on a {want_dtype} band (contract 3: nodata DN is 0)"
    except Exception:  # noqa: BLE001 - unreadable files are found by the full probe after a failed load
        return None
    return None


def usable_scenes(
    items: list[pystac.Item], bands: list[str], probe: bool = True, workers: int = 8
) -> tuple[list[pystac.Item], list[dict]]:
    """Split items into those whose assets for ``bands`` all exist with the right declared data type
    (and, with ``probe``, whose files have it and read), and those skipped (with why). Probing opens
    every file and reads blocks of it: worth it only once a load has failed (the count stage's reads
    fail on a wrong data type or a broken file, and then the run probes to find which scene)."""

    def check(item):
        missing = [b for b in bands if b not in item.assets]
        if missing:
            return f"missing assets {missing}"
        for b in bands:
            want = "uint8" if b == SCL else "uint16"
            why = declared_problem(item.assets[b], want) or (
                header_problem(item.assets[b].get_absolute_href(), want) if probe else None
            )
            if why:
                return f"{b}: {why}"
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


# Sentinel-2 L2A bands delivered at 20 m (Earth Search names); the rest used here are 10 m.
BANDS_20M = {"rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22", SCL}


def day_scale_offset(tiles: list[pystac.Item], band: str) -> tuple[float, float]:
    """The scale and offset of ``band`` for one overpass: its first tile's (a warning if tiles differ,
    since the tiles are fused as DN before scaling)."""
    pairs = [scale_offset(it, band) for it in tiles]
    if len(set(pairs)) > 1:
        log.warning("tiles of %s disagree on %s scale/offset %s; using the first", solar_day(tiles[0]), band, pairs)
    return pairs[0]


def upsample2(block: np.ndarray, bilinear: bool) -> np.ndarray:
    """Double the resolution of a (time, y, x) block that carries a 1-pixel halo in y and x.

    Bilinear on grids that share edges: each 10 m pixel centre lies a quarter of a 20 m pixel from
    its parent's centre, so it is 3/4 its parent and 1/4 the neighbour on that side, in y then x.
    NaN (no data) spreads to the pixels it touches. Nearest repeats each pixel 2 x 2 (class maps).
    """
    if not bilinear:
        return block[:, 1:-1, 1:-1].repeat(2, axis=1).repeat(2, axis=2)
    c, up, down = block[:, 1:-1, :], block[:, :-2, :], block[:, 2:, :]
    rows = np.empty((block.shape[0], 2 * c.shape[1], block.shape[2]), block.dtype)
    rows[:, 0::2], rows[:, 1::2] = 0.75 * c + 0.25 * up, 0.75 * c + 0.25 * down
    c, left, right = rows[:, :, 1:-1], rows[:, :, :-2], rows[:, :, 2:]
    out = np.empty((rows.shape[0], rows.shape[1], 2 * c.shape[2]), block.dtype)
    out[:, :, 0::2], out[:, :, 1::2] = 0.75 * c + 0.25 * left, 0.75 * c + 0.25 * right
    return out


def _to_10m(arr: xr.DataArray, grid: GeoBox, bilinear: bool) -> xr.DataArray:
    import dask.array as da

    data = da.overlap.overlap(arr.data, depth={0: 0, 1: 1, 2: 1}, boundary="nearest")
    chunks = (arr.data.chunks[0], tuple(2 * c for c in arr.data.chunks[1]), tuple(2 * c for c in arr.data.chunks[2]))
    up = data.map_blocks(upsample2, bilinear=bilinear, chunks=chunks, dtype=arr.dtype)
    coords = grid.coords
    return xr.DataArray(
        up, dims=("time", "y", "x"), coords={"time": arr.time, "y": coords["y"].values, "x": coords["x"].values}
    )


def load_reflectance(items: list[pystac.Item], grid: GeoBox, bands: list[str], chunk_px: int) -> xr.Dataset:
    """Surface reflectance (float32, NaN where no data) of ``bands`` plus ``scl`` (uint8), dims
    (time, y, x), one time step per solar day, dask-backed with one scene per chunk in time.

    20 m bands are read onto the 20 m version of the grid (which the 20 m-snapped AOI grid has, so
    on the scenes' own UTM zone this is a plain windowed read, not a warp) and doubled here: 3-8x
    faster than warping each file to 10 m, with the same bilinear weights (nearest for SCL).
    """
    if not items:
        raise NoScenesError("no usable scene left to load: see the skipped scenes in run.json")
    days = sorted({solar_day(it) for it in items})
    by_day = {d: [it for it in items if solar_day(it) == d] for d in days}
    import odc.stac  # here, not at the top: it imports dask.array, which a run does not otherwise need

    wanted = [*bands, SCL]
    fine, coarse = [b for b in wanted if b not in BANDS_20M], [b for b in wanted if b in BANDS_20M]
    grid20 = grid.zoom_out(2)
    common: dict[str, Any] = dict(groupby="solar_day", fail_on_error=True, resampling={SCL: "nearest", "*": "bilinear"})
    loaded = {}
    if fine:
        ds = odc.stac.load(items, bands=fine, geobox=grid, chunks={"time": 1, "y": chunk_px, "x": chunk_px}, **common)
        loaded.update({b: ds[b] for b in fine})
    if coarse:
        half = max(chunk_px // 2, 16)
        ds20 = odc.stac.load(items, bands=coarse, geobox=grid20, chunks={"time": 1, "y": half, "x": half}, **common)
        loaded.update({b: ds20[b] for b in coarse})
    ntime = {v.sizes["time"] for v in loaded.values()}
    if ntime != {len(days)}:
        raise SourceError(f"odc-stac grouped {len(items)} scenes into {ntime} days, expected {len(days)}")
    times = loaded[wanted[0]].time
    out = {}
    for b in bands:
        so = np.array([day_scale_offset(by_day[d], b) for d in days], np.float32)
        scale, offset = xr.DataArray(so[:, 0], dims="time"), xr.DataArray(so[:, 1], dims="time")
        dn = loaded[b].assign_coords(time=times)
        refl = (dn.astype(np.float32) * scale + offset).where(dn != 0).astype(np.float32)
        out[b] = _to_10m(refl, grid, bilinear=True) if b in BANDS_20M else refl
    out[SCL] = _to_10m(loaded[SCL].astype(np.uint8).assign_coords(time=times), grid, bilinear=False)
    res = xr.Dataset(out, coords={"time": times, "y": grid.coords["y"].values, "x": grid.coords["x"].values})
    res = res.assign_coords(scene_ids=("time", [",".join(it.id for it in by_day[d]) for d in days]))
    res.attrs["crs"] = str(grid.crs)
    return res


def load_dem(items: list[pystac.Item], grid: GeoBox) -> np.ndarray | None:
    """Elevation (float32 m, NaN where no tile has data; y, x) on the AOI grid: GLO-30 tiles arrive in
    EPSG:4326 at 1 arc-second and are each warped onto the grid here, once, bilinear, then mosaicked
    (the highest where tiles overlap, as their edges repeat the same posts). GDAL directly: the one
    small warp of a run needs none of odc-stac's dask machinery, whose import cost more than the warp."""
    if not items:
        return None
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dem = np.full(grid.shape.yx, np.nan, np.float32)
    tile = np.empty_like(dem)
    for it in items:
        tile.fill(np.nan)
        with rasterio.open(it.assets["data"].get_absolute_href()) as src:
            nodata = src.nodata if src.nodata is not None and not np.isnan(src.nodata) else None
            reproject(
                rasterio.band(src, 1),
                tile,
                src_nodata=nodata,
                dst_transform=grid.affine,
                dst_crs=str(grid.crs),
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
        np.fmax(dem, tile, out=dem)
    return dem


# ------------------------------------------------------- block reads for the fused count stage


def _aligned(src, grid: GeoBox) -> tuple[int, int] | None:
    """(row, col) offset of ``grid``'s origin in the file's pixels, if the file is on the same lattice
    (same CRS and pixel size, origin a whole number of pixels away): then a window read is exact."""
    a, g = src.transform, grid.affine
    if src.crs != rasterio.crs.CRS.from_user_input(str(grid.crs)):
        return None
    if (a.a, a.b, a.d, a.e) != (g.a, g.b, g.d, g.e):
        return None
    dx, dy = (g.c - a.c) / a.a, (g.f - a.f) / a.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return round(dy), round(dx)


def read_tile(
    href: str, grid: GeoBox, rows: tuple[int, int], cols: tuple[int, int], classes: bool, out: np.ndarray | None = None
) -> np.ndarray:
    """DN of band 1 of ``href`` on ``rows`` x ``cols`` of ``grid`` (0 where the file has no pixel):
    uint16 reflectance DN, or with ``classes`` a uint8 class map (SCL; nearest when warped); into
    ``out`` if given (of that shape and type).

    On the file's own lattice (the AOI grid is snapped to it) this is a plain window read; otherwise
    (another UTM zone, another pixel size) GDAL warps just this window, bilinear (nearest for classes).
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    (r0, r1), (c0, c1) = rows, cols
    with rasterio.open(href) as src:
        if src.crs is None:  # a file cut short loses its georeferencing tags before its pixels
            raise SourceError(f"{href} has no CRS: truncated or not a georeferenced image")
        want = "uint8" if classes else "uint16"  # contract 3: SCL classes, reflectance DN
        if src.dtypes[0] != want:
            raise SourceError(f"{href} is {src.dtypes[0]}, not {want} DN")
        if out is None:
            out = np.zeros((r1 - r0, c1 - c0), src.dtypes[0])
        off = _aligned(src, grid)
        if off is None:
            with WarpedVRT(
                src,
                crs=str(grid.crs),
                transform=grid.affine,
                width=grid.shape.x,
                height=grid.shape.y,
                nodata=0,
                resampling=Resampling.nearest if classes else Resampling.bilinear,
            ) as vrt:
                return vrt.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), out=out)
        fr0, fc0 = max(r0 + off[0], 0), max(c0 + off[1], 0)
        fr1, fc1 = min(r1 + off[0], src.height), min(c1 + off[1], src.width)
        if (fr1 - fr0, fc1 - fc0) != out.shape:  # the file does not cover the whole window
            out[...] = 0
        if fr1 > fr0 and fc1 > fc0:
            src.read(
                1,
                window=Window(fc0, fr0, fc1 - fc0, fr1 - fr0),
                out=out[fr0 - off[0] - r0 : fr1 - off[0] - r0, fc0 - off[1] - c0 : fc1 - off[1] - c0],
            )
        return out


def read_overpass(
    hrefs: list[str],
    grid: GeoBox,
    rows: tuple[int, int],
    cols: tuple[int, int],
    classes: bool = False,
    halo: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One band of one overpass (the tiles of a solar day, first valid pixel wins, as odc-stac fuses)
    on a block of ``grid``, with ``halo`` pixels more on each side; beyond the grid's edge the edge
    pixels repeat (as the reference upsampling's ``boundary="nearest"``). Into ``out`` if given, of the
    block's shape with its halo (so the bands of a scene land in one array, and a task reuses its
    arrays rather than page in fresh memory for every read)."""
    (r0, r1), (c0, c1) = rows, cols
    h, w = grid.shape.y, grid.shape.x
    rr = (max(r0 - halo, 0), min(r1 + halo, h))
    cc = (max(c0 - halo, 0), min(c1 + halo, w))
    if out is None:
        out = np.empty((r1 - r0 + 2 * halo, c1 - c0 + 2 * halo), np.uint8 if classes else np.uint16)
    # the part of the block and its halo inside the grid; the rest repeats its edge pixels
    top, left = rr[0] - (r0 - halo), cc[0] - (c0 - halo)
    inner = out[top : top + rr[1] - rr[0], left : left + cc[1] - cc[0]]
    for i, href in enumerate(hrefs):
        if i == 0:
            read_tile(href, grid, rr, cc, classes, out=inner)
        else:
            np.copyto(inner, read_tile(href, grid, rr, cc, classes), where=inner == 0)
        if i + 1 < len(hrefs) and inner.all():
            break
    bottom, right = top + inner.shape[0], left + inner.shape[1]
    out[:top] = out[top]
    out[bottom:] = out[bottom - 1]
    out[:, :left] = out[:, left : left + 1]
    out[:, right:] = out[:, right - 1 : right]
    return out


class Overpass(NamedTuple):
    """One solar day's tiles as the fused count stage reads them: plain, picklable values."""

    day: str  # local solar date, ISO
    hrefs: dict[str, list[str]]  # band -> the tiles' files, in search order
    scale_offset: np.ndarray  # float32 [len(bands), 2], in ``bands`` order


def overpasses(items: list[pystac.Item], bands: list[str]) -> list[Overpass]:
    """Group ``items`` by solar day (as odc-stac's ``groupby="solar_day"``), sorted by day."""
    if not items:
        raise NoScenesError("no usable scene left to load: see the skipped scenes in run.json")
    by_day: dict[str, list[pystac.Item]] = {}
    for it in items:
        by_day.setdefault(solar_day(it), []).append(it)
    return [
        Overpass(
            d,
            {b: [it.assets[b].get_absolute_href() or it.assets[b].href for it in tiles] for b in [*bands, SCL]},
            np.array([day_scale_offset(tiles, b) for b in bands], np.float32),
        )
        for d, tiles in sorted(by_day.items())
    ]
