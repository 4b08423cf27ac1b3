"""The count and onset stages written plainly in xarray, one step a function: the reference that the
fused kernels of ``count`` and ``onset`` are tested against (tests/unit/test_compute.py, test_count_stage.py,
test_loading.py), and what an analyst reads to see what the kernels do. Slow: a run never calls it.

clear views (``scl_mask``, ``clear_mask``) -> indices (``all_indices``) -> pond-, bare- and green-like
views (``pond_like``, ``bare_like``, ``green_like``) -> monthly counts and index sums (``monthly_counts``,
``monthly_sums``) -> onset maps and their evidence (``onset_maps``, ``evidence_maps``, ``change_maps``).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import xarray as xr

from pipeline.change import dip_onset, persistent_onset, share_while_active
from pipeline.confidence import active_total
from pipeline.count import (
    CLOUD_CLASSES,
    COUNT_LAYERS,
    INDEX_SUMS,
    ObservationRules,
    count_month,
    hot,
    month_blocks,
    month_starts,
)
from pipeline.onset import change_arrays, month_years
from pipeline.rules import ClearingRules, PondRules
from pipeline.terrain import slope_degrees


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow True areas of a (time, y, x) mask by ``px`` pixels in y and x, never across time."""
    from scipy import ndimage  # here: a run counts with its own kernel, and scipy.ndimage takes 0.2 s to import

    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, 2 * px + 1, 2 * px + 1)).astype(bool)


def grow_mask(mask: xr.DataArray, px: int) -> xr.DataArray:
    if px <= 0:
        return mask
    data = mask.data
    if mask.chunks is not None:  # dask-backed
        grown = data.map_overlap(_grow, depth={0: 0, 1: px, 2: px}, boundary="none", px=px, dtype=bool)
    else:
        grown = _grow(np.asarray(data), px)
    return mask.copy(data=grown)


def scl_mask(scl: xr.DataArray, invalid_classes: list[int], buffer_px: int) -> xr.DataArray:
    """True where a pixel is a clear view of the ground.

    Pixels of ``invalid_classes`` are excluded; the cloud-born ones among them (shadow, cloud,
    cirrus) are grown by ``buffer_px`` pixels first.
    """
    cloudy_classes = [c for c in invalid_classes if c in CLOUD_CLASSES]
    other = [c for c in invalid_classes if c not in CLOUD_CLASSES]
    cloudy = grow_mask(scl.isin(cloudy_classes), buffer_px)
    return (~(cloudy | scl.isin(other))).rename("valid")


def clear_mask(scene: xr.Dataset, invalid_classes: list[int], buffer_px: int, bands: list[str]) -> xr.DataArray:
    """``scl_mask`` and a reflectance in every band used (nodata and swath edges are NaN)."""
    valid = scl_mask(scene["scl"], invalid_classes, buffer_px)
    for b in bands:
        valid = valid & scene[b].notnull()
    return valid


def haze_mask(blue, red, hot_max: float | None = None, blue_max: float | None = None):
    """True where a pixel looks like haze or cloud: HOT above ``hot_max`` or blue reflectance above
    ``blue_max``; a test whose threshold is None is off (with both off, nothing is flagged).

    Pure spectral and per pixel, so it needs no SCL. NaN (no data) is never flagged: the clear-view
    mask removes it anyway. Bright surfaces (white plastic over a pond, fresh concrete) are flagged too.
    """
    flagged = xr.zeros_like(blue, dtype=bool) if isinstance(blue, xr.DataArray) else np.zeros(np.shape(blue), bool)
    if hot_max is not None:
        flagged = flagged | (hot(blue, red) > hot_max)
    if blue_max is not None:
        flagged = flagged | (blue > blue_max)
    if isinstance(flagged, xr.DataArray):
        flagged = flagged.rename("haze")
    return flagged


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """(a - b) / (a + b); NaN where the sum is zero (no signal) or either input is NaN."""
    total = a + b
    return ((a - b) / total.where(total != 0)).astype(np.float32)


def ndvi(red, nir):
    """Vegetation: high for forest and crops, near zero or negative for soil and water."""
    return normalized_difference(nir, red).rename("ndvi")


def ndwi(green, nir):
    """McFeeters' water index (green vs NIR)."""
    return normalized_difference(green, nir).rename("ndwi")


def mndwi(green, swir16):
    """Xu's modified NDWI (green vs SWIR 1.6 um): separates water from bare soil and built-up land,
    which NDWI confuses; milky, clay-laden leachate ponds stay strongly positive."""
    return normalized_difference(green, swir16).rename("mndwi")


def bsi(blue, red, nir, swir16):
    """Bare soil index: ((SWIR1 + red) - (NIR + blue)) / ((SWIR1 + red) + (NIR + blue))."""
    return normalized_difference(swir16 + red, nir + blue).rename("bsi")


def all_indices(scene: xr.Dataset) -> xr.Dataset:
    """The indices the classifiers use, from a reflectance dataset with Earth Search band names."""
    return xr.Dataset(
        {
            "ndvi": ndvi(scene["red"], scene["nir"]),
            "mndwi": mndwi(scene["green"], scene["swir16"]),
            "bsi": bsi(scene["blue"], scene["red"], scene["nir"], scene["swir16"]),
        }
    )


def pond_like(ind: xr.Dataset, valid: xr.DataArray, rules: PondRules, nir: xr.DataArray) -> xr.DataArray:
    """Clear observations that look like open water (``nir``: B08 reflectance, which water absorbs)."""
    return (valid & (ind["mndwi"] > rules.mndwi_min) & (ind["ndvi"] < rules.ndvi_max) & (nir < rules.nir_max)).rename(
        "pond_like"
    )


def bare_like(ind: xr.Dataset, valid: xr.DataArray, rules: ClearingRules, water: xr.DataArray) -> xr.DataArray:
    """Clear observations of bare soil (laterite, fresh cuts) that are not water: turbid water next to
    laterite (a pond pixel whose 20 m SWIR is mixed with its bank) can have a positive BSI too."""
    return (valid & ~water & (ind["ndvi"] < rules.ndvi_max) & (ind["bsi"] > rules.bsi_min)).rename("bare_like")


def green_like(ind: xr.Dataset, valid: xr.DataArray, rules: ClearingRules) -> xr.DataArray:
    """Clear observations of green vegetation: rice on a paddy, regrowth on a swidden or a healing scar."""
    return (valid & (ind["ndvi"] > rules.green_ndvi_min)).rename("green_like")


def monthly_counts(flags: dict[str, xr.DataArray], start: date, end: date) -> xr.Dataset:
    """Per-month counts (int16, dims month, y, x) of each boolean (time, y, x) flag.

    Every month of the period is present, with zeros where there was no scene.
    """
    months = month_starts(start, end)
    out = {}
    for name, flag in flags.items():
        # resample leaves NaN in a month without scenes (e.g. a monsoon month under the cloud limit):
        # fill before casting, since NaN has no integer value
        counts = flag.astype(np.int16).resample(time="MS").sum()
        counts = counts.reindex(time=months).fillna(0).astype(np.int16)
        out[name] = counts.rename(time="month")
    return xr.Dataset(out)


def yearly_counts(monthly: xr.DataArray) -> xr.DataArray:
    """Sum a (month, y, x) count over each calendar year: dims (year, y, x), int16 (at most a few
    hundred clear views a year even where orbits overlap)."""
    return monthly.groupby(monthly["month"].dt.year).sum("month", dtype=np.int16)


def monthly_sums(values: dict[str, xr.DataArray], valid: xr.DataArray, start: date, end: date) -> xr.Dataset:
    """Per-month float32 sums (dims month, y, x) of each (time, y, x) index over clear views only.

    With the ``valid`` count they give the mean index of any span of months, e.g. while a pond is
    active: the evidence a polygon carries, without keeping the scenes.
    """
    months = month_starts(start, end)
    out = {}
    for name, v in values.items():
        s = v.where(valid & v.notnull(), 0).astype(np.float32).resample(time="MS").sum()
        out[name] = s.reindex(time=months).fillna(0).astype(np.float32).rename(time="month")
    return xr.Dataset(out)


def count_stage(days, grid, start: date, end: date, chunk_px: int, rules: ObservationRules) -> xr.Dataset:
    """Lazy monthly counts (int16) and index sums (float32) of ``days`` (``loading.Overpass``, bands
    blue, green, red, nir, swir16) on ``grid``: one task per month and block of ``chunk_px``, dims
    (month, y, x), every month of the period present (zeros where there was no scene). For analysts
    and tests; a run writes the same tasks' results straight into its store (``count_tasks``)."""
    import dask
    import dask.array as da

    months = month_starts(start, end)
    cells: dict[int, dict[int, list]] = {}  # month -> first row -> the row's blocks, (counts, sums) each
    for i, these, rows, cols in month_blocks(days, grid, start, end, chunk_px):
        hw = (1, rows[1] - rows[0], cols[1] - cols[0])
        task = dask.delayed(count_month, pure=True, nout=2)(these, grid, rows, cols, rules) if these else None
        cells.setdefault(i, {}).setdefault(rows[0], []).append(
            [
                da.from_delayed(task[out], shape=(n, *hw[1:]), dtype=dtype)[:, None]
                if these
                else da.zeros((n, *hw), dtype=dtype, chunks=(n, *hw))
                for out, (dtype, n) in enumerate(((np.int16, 4), (np.float32, 3)))
            ]
        )
    counts, sums = (
        da.block([[[[cell[out] for cell in row] for row in month.values()] for month in cells.values()]])
        for out in (0, 1)
    )
    coords = {"month": months, "y": grid.coords["y"].values, "x": grid.coords["x"].values}
    dims = ("month", "y", "x")
    return xr.Dataset(
        {name: (dims, counts[k] if k < 4 else sums[k - 4]) for k, name in enumerate(COUNT_LAYERS)}, coords=coords
    )


def per_pixel(func, maps: list[xr.DataArray], records: list[xr.DataArray], n_out: int = 1, **kwargs):
    """``func(*maps, *records, **kwargs)`` for (y, x) ``maps`` and (month, y, x) ``records``, which
    ``func`` sees with months on the last axis (a view); returns ``n_out`` (y, x) DataArrays (a tuple
    if more than one). Lazy, block by block, when the records are dask-backed: each block holds one
    area's whole record, so the month axis is brought into one chunk first."""
    k = len(maps)

    def block(*arrays):
        out = func(*arrays[:k], *[np.moveaxis(r, 0, -1) for r in arrays[k:]], **kwargs)
        return np.stack(out) if n_out > 1 else out[None]

    template = records[0].isel(month=0, drop=True)
    if records[0].chunks is None:
        stacked = block(*[m.values for m in maps], *[r.values for r in records])
    else:
        import dask.array as da

        recs = [r.chunk({"month": -1}).data for r in records]
        spatial = recs[0].chunks[1:]
        args = [m.chunk(dict(zip(m.dims, spatial))).data for m in maps] + recs
        dtype = np.result_type(*[block(*[np.zeros((1,) * a.ndim, a.dtype) for a in args])])
        stacked = da.map_blocks(block, *args, dtype=dtype, chunks=((n_out,), *spatial))
    outs = [template.copy(data=stacked[i]) for i in range(n_out)]
    return tuple(outs) if n_out > 1 else outs[0]


def onset_maps(valid: xr.DataArray, hits: xr.DataArray, window: int, persistence: float, min_obs: int) -> xr.Dataset:
    """``persistent_onset`` over (month, y, x) counts, lazily when they are dask-backed."""
    onset, last, seen = per_pixel(
        persistent_onset, [], [valid, hits], n_out=3, window=window, persistence=persistence, min_obs=min_obs
    )
    return xr.Dataset({"onset": onset, "last": last, "months_seen": seen})


def share_while_active_maps(maps: xr.Dataset, valid: xr.DataArray, hits: xr.DataArray) -> xr.DataArray:
    """``share_while_active`` over (month, y, x) counts and ``onset_maps`` output, lazily when dask-backed."""
    return per_pixel(share_while_active, [maps["onset"], maps["last"]], [valid, hits])


def dip_onset_maps(
    onset: xr.DataArray, valid: xr.DataArray, index_sum: xr.DataArray, lead: int, drop: float
) -> xr.DataArray:
    """``dip_onset`` over (month, y, x) counts and sums, lazily when they are dask-backed; the sums
    as floats or encoded as stored (``sum_scale``)."""
    return per_pixel(dip_onset, [onset], [valid, index_sum], lead=lead, drop=drop / sum_scale(index_sum))


def sum_scale(index_sum: xr.DataArray) -> float:
    """What one unit of ``index_sum`` is worth in index units: its CF ``scale_factor`` when it comes as
    stored (int16 thousandths, ``store.read_record``), else 1. Means and thresholds are worked out in
    the stored units and scaled once per pixel, not the record once per value."""
    return float(index_sum.attrs.get("scale_factor", 1.0))


def evidence_maps(
    maps: xr.Dataset, valid: xr.DataArray, hits: xr.DataArray | None, sums: dict[str, xr.DataArray]
) -> xr.Dataset:
    """Per-pixel evidence over each pixel's active span (from ``change.onset_maps`` output): clear views
    (``n_clear_obs``), the share showing ``hits`` (``water_share``, when given) and the mean of each
    index in ``sums`` (``<name>_mean``, from monthly sums over clear views, as floats or as stored). Lazy
    when dask-backed."""

    def over(func, *records, dtype):
        return per_pixel(func, [maps["onset"], maps["last"]], list(records)).astype(dtype)

    out = {"n_clear_obs": over(active_total, valid, dtype=np.int32)}
    if hits is not None:
        out["water_share"] = over(share_while_active, valid, hits, dtype=np.float32)
    for name, s in sums.items():  # floats, or encoded as stored (``change.sum_scale``)
        out[f"{name}_mean"] = over(share_while_active, valid, s, dtype=np.float32) * np.float32(sum_scale(s))
    return xr.Dataset(out)


def slope_deg(dem: xr.DataArray, resolution_m: float) -> xr.DataArray:
    """``slope_degrees`` of a DEM DataArray, on its coordinates."""
    return dem.copy(data=slope_degrees(dem.values, resolution_m)).rename("slope_deg")


def _as_xarray(ponds: dict, bare: dict, yearly: np.ndarray, years: np.ndarray, coords: dict):
    """``change_arrays``' maps as Datasets and the clear views per year as a DataArray, on ``coords``."""

    def maps(arrays):
        return xr.Dataset({k: (("y", "x"), a) for k, a in arrays.items()}, coords=coords)

    return (
        maps(ponds),
        maps(bare),
        xr.DataArray(yearly, dims=("year", "y", "x"), name="valid", coords={"year": years, **coords}),
    )


def change_maps(monthly: xr.Dataset, ch) -> tuple[xr.Dataset, xr.Dataset, xr.DataArray]:
    """``change_arrays`` on a Dataset of monthly counts (dims month, y, x; the index sums as floats, or as
    stored with their CF ``scale_factor``): pond and clearing onset maps with their evidence, and the clear
    views per year."""
    years = month_years(monthly["month"].values)
    ponds, bare, yearly = change_arrays(
        {k: monthly[k].values for k in COUNT_LAYERS}, {k: sum_scale(monthly[k]) for k in INDEX_SUMS}, years, ch
    )
    coords = {k: c for k, c in monthly.coords.items() if "month" not in c.dims}
    return _as_xarray(ponds, bare, yearly, np.unique(years), coords)
