"""The count stage: every clear view of every scene classified and counted, per pixel and month, into
the yearly stores of monthly counts (``store``).

Counting is what survives Kachin's weather: the monsoon (June-September) leaves months with no
clear view at all, so medians of reflectance over a calendar year are dominated by whichever
season happened to be clear. Counting, per pixel and month, how many clear views there were and
how many of them showed water or bare soil keeps every observation's evidence, dates change to
the month (a pond dug in November belongs to that year, not the next), and reduces the cube from
hundreds of scenes to one layer per month before anything is held in memory.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple

import dask
import numba
import numpy as np
import pandas as pd
from dask.base import tokenize

from pipeline import store
from pipeline.config import RunConfig
from pipeline.scheduler import Progress, Timings, dask_progress
from pipeline.sources.loading import SCL, overpasses, read_overpass, solar_day, usable_scenes
from pipeline.store import COUNT_LAYERS, COUNTS, INDEX_SUMS, Scratch  # noqa: F401 - the layers the stage counts

log = logging.getLogger(__name__)

# SCL classes that come from clouds: they get a buffer, because SCL misses their thin edges.
# Nodata and saturation have sharp edges and are masked as they are.
CLOUD_CLASSES = (3, 8, 9, 10)


# The clear-sky line of the haze-optimised transform (Zhang, Guindon & Cihlar 2002, Remote Sens.
# Environ. 82: 173-187), with the slope and offset Fmask uses on top-of-atmosphere reflectance
# (Zhu & Woodcock 2012, Remote Sens. Environ. 118: 83-94, eq. 5): on clear land blue and red rise
# together along it; haze and thin cloud scatter blue far more than red and lift a pixel above it.
HOT_SLOPE = 0.5


HOT_OFFSET = 0.08


def hot(blue, red):
    """Haze-optimised transform ``blue - 0.5 red - 0.08``: about 0 or below on clear land, above 0 in
    haze and cloud. Works on numpy arrays and DataArrays alike (float32 in, float32 out)."""
    return blue - HOT_SLOPE * red - HOT_OFFSET


BANDS = ["blue", "green", "red", "nir", "swir16"]  # the reflectance bands the count reads (and SCL)


def month_starts(start: date, end: date) -> pd.DatetimeIndex:
    return pd.date_range(
        pd.Timestamp(start).to_period("M").to_timestamp(), pd.Timestamp(end).to_period("M").to_timestamp(), freq="MS"
    )


# The xarray formulation of the stage (pipeline/lab/xarray_reference.py: clear_mask -> all_indices ->
# pond_like / bare_like / green_like -> monthly_counts) is the reference and what an analyst reads; run
# as a dask graph it makes a dozen full-size temporaries per scene and block. ``accumulate_scene`` does
# the same work in one pass over each pixel, with the GIL released; tests check it gives the reference's
# counts exactly and its sums to float32 rounding.


class ObservationRules(NamedTuple):
    """What ``accumulate_scene`` needs of the config, as plain arrays (picklable, numba-friendly)."""

    cloud: np.ndarray  # bool[256]: SCL classes that are cloud-born (grown by buffer_px)
    other: np.ndarray  # bool[256]: other invalid SCL classes (nodata, saturated...)
    buffer_px: int
    thresholds: np.ndarray  # float32[8]: pond mndwi_min, pond ndvi_max, bare ndvi_max, bsi_min, green ndvi_min,
    #                          haze screen hot_max, blue_max (NaN: off), pond nir_max


def observation_rules(mask, ponds, clearings) -> ObservationRules:
    """From the config's ``mask``, ``ponds`` and ``clearings`` sections."""
    cloud, other = np.zeros(256, bool), np.zeros(256, bool)
    for c in mask.invalid_scl:
        (cloud if c in CLOUD_CLASSES else other)[c] = True
    off = lambda v: np.nan if v is None else v  # noqa: E731
    thresholds = np.array(
        [
            ponds.mndwi_min,
            ponds.ndvi_max,
            clearings.ndvi_max,
            clearings.bsi_min,
            clearings.green_ndvi_min,
            off(mask.hot_max),
            off(mask.blue_max),
            ponds.nir_max,
        ],
        np.float32,
    )  # compared in float32, as numpy does
    return ObservationRules(cloud, other, int(mask.cloud_buffer_px), thresholds)


@numba.njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _nd(a, b):
    total = a + b
    return (a - b) / total if total != 0 else np.float32(np.nan)


@numba.njit(nogil=True, cache=True)
def _swir_rows(swir20, scale, offset, h, halo):
    """swir16 reflectance at 20 m with its rows doubled to the block's ``h`` 10 m rows (as ``upsample2``):
    (h, 20 m columns) float32, NaN where there is no data."""
    q3, q1 = np.float32(0.75), np.float32(0.25)
    nan = np.float32(np.nan)
    hh, ww = swir20.shape
    s20 = np.empty((hh, ww), np.float32)
    for i in range(hh):
        for j in range(ww):
            d = swir20[i, j]
            s20[i, j] = np.float32(d) * scale + offset if d != 0 else nan
    rows = np.empty((h, ww), np.float32)
    for i in range(h):
        p = i // 2 + halo
        n = p - 1 if i % 2 == 0 else p + 1
        for j in range(ww):
            rows[i, j] = q3 * s20[p, j] + q1 * s20[n, j]
    return rows


@numba.njit(nogil=True, cache=True)
def _cloud_within_columns(scl20, cloud, h, w, b, halo):
    """Whether a cloud-born SCL class lies within ``b`` 10 m columns of each pixel, on the block's rows
    and ``b`` rows above and below it: (h + 2b, w) uint8. A running count along each row, so the buffer
    costs the same whatever its width (the kernel then runs one down each column)."""
    hm = np.zeros((h + 2 * b, w), np.uint8)
    flag = np.zeros(w + 2 * b, np.uint8)
    last = -1
    for a in range(h + 2 * b):
        p = (a - b + 2 * halo) // 2
        if p == last:  # two 10 m rows share a 20 m row
            hm[a] = hm[a - 1]
            continue
        last = p
        for k in range(w + 2 * b):
            flag[k] = cloud[scl20[p, (k - b + 2 * halo) // 2]]
        run = 0
        for k in range(2 * b):
            run += flag[k]
        for j in range(w):
            run += flag[j + 2 * b]
            hm[a, j] = run > 0
            run -= flag[j]
    return hm


@numba.njit(nogil=True, cache=True, inline="always")
def _row_lookups(swir_rows, scl_row, other, near, halo, sw_row, masked):
    """One 10 m row's table lookups, in loops of their own so that the per-pixel rules are straight
    arithmetic that LLVM turns into SIMD: swir16 doubled along the row into ``sw_row``, and ``masked``
    where SCL is a masked class or a cloud lies near. A 20 m pixel (two 10 m columns) at a time, without
    the branch on the column's parity."""
    q3, q1 = np.float32(0.75), np.float32(0.25)
    w = sw_row.shape[0]
    for k in range(w // 2):
        q = k + halo
        centre = q3 * swir_rows[q]
        sw_row[2 * k] = centre + q1 * swir_rows[q - 1]
        sw_row[2 * k + 1] = centre + q1 * swir_rows[q + 1]
        masked[2 * k] = masked[2 * k + 1] = other[scl_row[q]]
    if w % 2:  # a block of odd width (not one the count stage makes)
        q = w // 2 + halo
        sw_row[w - 1] = q3 * swir_rows[q] + q1 * swir_rows[q - 1]
        masked[w - 1] = other[scl_row[q]]
    for j in range(w):
        masked[j] = masked[j] | (near[j] > 0)


@numba.njit(nogil=True, cache=True, inline="always")
def _add_reflectance(dn10, i, scale_offset, sw_row, clear_row, refl):
    """Row ``i``'s clear views' reflectance (blue, green, red, nir, swir16) added to ``refl``: a band at a
    time and a select rather than a branch, so each loop is one SIMD pass along the row."""
    zero = np.float32(0)
    for band in range(4):
        s, o = scale_offset[band, 0], scale_offset[band, 1]
        for j in range(sw_row.shape[0]):
            refl[band, i, j] += np.float32(dn10[band, i, j]) * s + o if clear_row[j] else zero
    for j in range(sw_row.shape[0]):
        refl[4, i, j] += sw_row[j] if clear_row[j] else zero


# error_model="numpy": a division by zero gives inf or NaN instead of raising, so the per-pixel loop has
# no exception branch and LLVM vectorises it (the one zero denominator that matters is tested in _nd)
@numba.njit(nogil=True, cache=True, error_model="numpy")
def accumulate_scene(dn10, scale_offset, swir20, scl20, halo, cloud, other, buffer_px, thresholds, counts, sums, refl):
    """Add one overpass of a block to a month's ``counts`` (int16 [4, h, w]: valid, pond, bare, green)
    and ``sums`` (float32 [3, h, w]: MNDWI, NDVI, BSI over clear views), and, unless ``refl`` is empty
    (shape (5, 0, 0)), the clear views' reflectance to ``refl`` (float32 [5, h, w]: blue, green, red,
    nir, swir16), the dry-season evidence.

    ``dn10``: uint16 [4, h, w] DN of blue, green, red, nir on the block (0: no data); ``scale_offset``:
    float32 [5, 2] of those and swir16; ``swir20`` (uint16) and ``scl20`` (uint8): the block's 20 m
    pixels with ``halo`` more on every side (edge pixels repeated beyond the grid). The 20 m bands are
    doubled as ``loading.upsample2`` does (bilinear, NaN spreading; nearest for SCL) and cloud-born
    SCL classes grown by ``buffer_px`` (a square, as ``lab.xarray_reference.grow_mask``): ``halo`` >= (buffer_px+1)//2.
    Views the optional haze screen flags (``lab.xarray_reference.haze_mask``) are not clear views.
    """
    h, w = dn10.shape[1], dn10.shape[2]
    rows = _swir_rows(swir20, scale_offset[4, 0], scale_offset[4, 1], h, halo)
    b = buffer_px
    hm = _cloud_within_columns(scl20, cloud, h, w, b, halo)
    near = np.zeros(w, np.int32)  # clouds within b rows and b columns of row i's pixels
    for a in range(2 * b):
        for j in range(w):
            near[j] += hm[a, j]
    t_mndwi, t_pond_ndvi, t_bare_ndvi, t_bsi, t_green, hot_max, blue_max, t_nir = thresholds[:8]
    hot_slope, hot_offset = np.float32(HOT_SLOPE), np.float32(HOT_OFFSET)
    (sb, ob), (sg, og), (sr, or_), (sn, on) = scale_offset[0], scale_offset[1], scale_offset[2], scale_offset[3]
    sw_row = np.empty(w, np.float32)
    masked = np.empty(w, np.bool_)
    clear_row = np.empty(w, np.bool_)
    zero = np.float32(0)
    evidence = refl.shape[1] > 0
    for i in range(h):
        p = i // 2 + halo
        for j in range(w):
            near[j] += hm[i + 2 * b, j]
        _row_lookups(rows[i], scl20[p], other, near, halo, sw_row, masked)
        for j in range(w):
            d0, d1, d2, d3 = dn10[0, i, j], dn10[1, i, j], dn10[2, i, j], dn10[3, i, j]
            sw = sw_row[j]
            blue = np.float32(d0) * sb + ob
            green = np.float32(d1) * sg + og
            red = np.float32(d2) * sr + or_
            nir = np.float32(d3) * sn + on
            hazy = (blue - hot_slope * red - hot_offset > hot_max) | (blue > blue_max)  # False if off
            clear = ~masked[j] & (d0 != 0) & (d1 != 0) & (d2 != 0) & (d3 != 0) & ~np.isnan(sw) & ~hazy
            ndvi = _nd(nir, red)
            mndwi = _nd(green, sw)
            bsi = _nd(sw + red, nir + blue)
            water = (mndwi > t_mndwi) & (ndvi < t_pond_ndvi) & (nir < t_nir)
            counts[0, i, j] += clear
            counts[1, i, j] += clear & water
            counts[2, i, j] += clear & ~water & (ndvi < t_bare_ndvi) & (bsi > t_bsi)
            counts[3, i, j] += clear & (ndvi > t_green)
            sums[0, i, j] += mndwi if clear & ~np.isnan(mndwi) else zero
            sums[1, i, j] += ndvi if clear & ~np.isnan(ndvi) else zero
            sums[2, i, j] += bsi if clear & ~np.isnan(bsi) else zero
            clear_row[j] = clear
        if evidence:  # a loop of its own: a branch in the one above would keep LLVM from vectorising it
            _add_reflectance(dn10, i, scale_offset, sw_row, clear_row, refl)
        for j in range(w):
            near[j] -= hm[i, j]


@numba.njit(nogil=True, cache=True)
def mean_reflectance(refl, valid, codes, out):
    """``refl`` summed over ``valid`` clear views -> their mean as a byte, 1 + mean x ``codes`` (clipped
    to 1..255; ``store.REFL_CODES``), 0 where there was no clear view."""
    for k in range(refl.shape[0]):
        for i in range(refl.shape[1]):
            for j in range(refl.shape[2]):
                n = valid[i, j]
                out[k, i, j] = 0 if n == 0 else 1 + min(max(np.rint(refl[k, i, j] / n * codes), 0), 254)


NO_EVIDENCE = np.zeros((5, 0, 0), np.float32)  # ``accumulate_scene``'s ``refl`` when evidence is off


def load_kernel(rules: ObservationRules) -> None:
    """Have numba load ``accumulate_scene`` (from its cache, or compile it) by counting a 2 x 2 block of
    nothing, with the argument types ``count_month`` passes: the first count task need not wait for it."""
    halo = max(1, (rules.buffer_px + 1) // 2)
    coarse = (1 + 2 * halo, 1 + 2 * halo)
    accumulate_scene(
        np.zeros((4, 2, 2), np.uint16),
        np.ones((5, 2), np.float32),
        np.zeros(coarse, np.uint16),
        np.zeros(coarse, np.uint8),
        halo,
        rules.cloud,
        rules.other,
        rules.buffer_px,
        rules.thresholds,
        np.zeros((4, 2, 2), np.int16),
        np.zeros((3, 2, 2), np.float32),
        NO_EVIDENCE,
    )


FINE = ("blue", "green", "red", "nir")  # the 10 m bands of ``accumulate_scene``, in its order; then swir16


def count_month(
    days,
    grid,
    rows: tuple[int, int],
    cols: tuple[int, int],
    rules: ObservationRules,
    scratch: Scratch | None = None,
    reflectance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The counts (int16 [4, h, w]) and sums (float32 [3, h, w]), layers as ``COUNT_LAYERS``, of one
    month's overpasses on one block of ``grid``: the whole count stage for that block in one task. With
    ``reflectance`` (float32 [5, h, w], ``store.EVIDENCE_BANDS``), also adds to it the reflectance of
    the clear views, from the same reads. With ``scratch``, in the thread's arrays of it (good until the
    thread's next task)."""
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    scratch = scratch or Scratch()
    counts, sums = scratch.array("counts", (4, h, w), np.int16), scratch.array("sums", (3, h, w), np.float32)
    counts.fill(0)
    sums.fill(0)
    halo = max(1, (rules.buffer_px + 1) // 2)
    grid20 = grid.zoom_out(2)
    rows20, cols20 = (rows[0] // 2, rows[1] // 2), (cols[0] // 2, cols[1] // 2)
    dn10 = scratch.array("dn10", (len(FINE), h, w), np.uint16)
    coarse = (h // 2 + 2 * halo, w // 2 + 2 * halo)
    swir20, scl20 = scratch.array("swir20", coarse, np.uint16), scratch.array("scl20", coarse, np.uint8)
    for day in days:
        for k, b in enumerate(FINE):
            read_overpass(day.hrefs[b], grid, rows, cols, out=dn10[k])
        swir = read_overpass(day.hrefs["swir16"], grid20, rows20, cols20, halo=halo, out=swir20)
        scl = read_overpass(day.hrefs[SCL], grid20, rows20, cols20, classes=True, halo=halo, out=scl20)
        accumulate_scene(
            dn10,
            day.scale_offset,
            swir,
            scl,
            halo,
            rules.cloud,
            rules.other,
            rules.buffer_px,
            rules.thresholds,
            counts,
            sums,
            NO_EVIDENCE if reflectance is None else reflectance,
        )
    return counts, sums


def month_blocks(days, grid, start: date, end: date, chunk_px: int):
    """The count stage's tasks: ``(month index, that month's overpasses, rows, cols)`` for every month of
    [start, end] and block of ``chunk_px`` of ``grid`` (a month without overpasses has an empty list)."""
    if chunk_px % 2 or grid.shape.y % 2 or grid.shape.x % 2:
        raise ValueError("the count stage needs an even chunk size and a grid snapped to 20 m")
    months = month_starts(start, end)
    month_of = pd.DatetimeIndex([d.day for d in days]).to_period("M").to_timestamp()
    spans = lambda n: [(a, min(a + chunk_px, n)) for a in range(0, n, chunk_px)]  # noqa: E731
    for i, m in enumerate(months):
        these = [d for d, mo in zip(days, month_of) if mo == m]
        for rows in spans(grid.shape.y):
            for cols in spans(grid.shape.x):
                yield i, these, rows, cols


def _count_into(write, months: list, grid, rows, cols, rules: ObservationRules, scratch: Scratch, evidence=None):
    """Count one block for each of ``months`` (month index, its overpasses) in turn and ``write`` each
    month's counts. With ``evidence`` (a writer), the months are a dry season: the mean reflectance of
    all their clear views is written too, once."""
    h, w = rows[1] - rows[0], cols[1] - cols[0]
    reflectance = views = None
    if evidence is not None:
        reflectance, views = scratch.array("refl", (5, h, w), np.float32), scratch.array("views", (h, w), np.int32)
        reflectance.fill(0)
        views.fill(0)
    for month, days in months:
        counts, sums = count_month(days, grid, rows, cols, rules, scratch, reflectance)
        if views is not None:
            views += counts[0]
        write(month, rows, cols, counts, sums, scratch)
    if evidence is not None:
        codes = scratch.array("refl_codes", (5, h, w), np.uint8)
        mean_reflectance(reflectance, views, np.float32(store.REFL_CODES), codes)
        evidence(rows, cols, codes)


def count_tasks(
    write,
    name: str,
    days,
    grid,
    start: date,
    end: date,
    chunk_px: int,
    rules: ObservationRules,
    scratch: Scratch | None = None,
    evidence_months: frozenset[int] = frozenset(),
    write_evidence=None,
) -> list:
    """``count_stage`` as tasks (dask.delayed, to compute) that hand each block's counts to
    ``write(month, rows, cols, counts, sums, scratch)`` (``store.write_block`` on a store's layers): each
    task writes its own block, so no month's counts are gathered anywhere, and a month without a scene is
    left to the store's zeros. ``chunk_px`` must be a multiple of the store's chunks; ``name`` (the
    store's) keeps the tasks of stores computed together apart. Tasks computed together share one
    ``scratch``. With ``write_evidence`` (``store.write_evidence`` on the store), the months of
    ``evidence_months`` of each block are one task, which also hands their mean reflectance to it:
    one accumulation in memory and one write for a year's dry season, not one per month."""
    # keyed by their number of overpasses: dask runs independent tasks in the order of their keys,
    # from the last, so the months with the most overpasses go first and the shortest last, not a long
    # one in a thread while the other idles
    scratch = scratch or Scratch()
    months = month_starts(start, end)
    groups: dict[tuple, list] = {}
    for i, these, rows, cols in month_blocks(days, grid, start, end, chunk_px):
        if not these:
            continue
        dry = write_evidence is not None and months[i].month in evidence_months
        groups.setdefault(("dry", rows, cols) if dry else (i, rows, cols), []).append((i, these))
    return [
        dask.delayed(_count_into, pure=True)(
            write,
            group,
            grid,
            rows,
            cols,
            rules,
            scratch,
            write_evidence if kind == "dry" else None,
            dask_key_name=f"count-{sum(len(t) for _, t in group):03d}-{tokenize(name, kind, rows, cols)}",
        )
        for (kind, rows, cols), group in groups.items()
    ]


def classification_settings(cfg: RunConfig) -> dict:
    """The settings the monthly counts depend on (and nothing else), for the composite key."""
    return {
        "mask": cfg.mask.model_dump(),
        "bands": BANDS,
        "pond": {k: getattr(cfg.ponds, k) for k in ("mndwi_min", "ndvi_max", "nir_max")},
        "clearing": {k: getattr(cfg.clearings, k) for k in ("ndvi_max", "bsi_min", "green_ndvi_min")},
        **({"evidence_months": sorted(evidence_months(cfg))} if evidence_months(cfg) else {}),
    }


def evidence_months(cfg: RunConfig) -> frozenset[int]:
    """The calendar months whose clear views make the evidence composites (none with evidence off)."""
    return frozenset(cfg.outputs.evidence_months) if cfg.outputs.evidence else frozenset()


def year_tasks(cfg: RunConfig, aoi, scenes, start: date, end: date, path: Path, scratch: Scratch | None = None) -> list:
    """Tasks (dask.delayed) that count the clear, pond-like, bare and green views of ``scenes`` in
    [start, end], and sum their indices, per month, into the store layers at ``path``."""
    rules = observation_rules(cfg.mask, cfg.ponds, cfg.clearings)
    layers = store.open_layers(path, write=True)
    write = functools.partial(store.write_block, layers)
    evidence = functools.partial(store.write_evidence, layers) if evidence_months(cfg) else None
    return count_tasks(
        write,
        path.name,
        overpasses(scenes, BANDS),
        aoi.grid,
        start,
        end,
        cfg.compute.chunk_px,
        rules,
        scratch,
        evidence_months(cfg),
        evidence,
    )


def _drop_unreadable(scenes, unreadable: list[dict], error: Exception) -> list:
    """After a failed load, probe each scene's files and keep those that read; re-raise if all do
    (then the failure was not a scene's)."""
    good, bad = usable_scenes(scenes, [*BANDS, SCL], probe=True)
    if not bad:
        raise error
    unreadable.extend(bad)
    return good


@dataclass
class CountedYears:
    """The count stage's result: each year's store (None: no scene that year) and its number of months, in
    order; the scenes counted, the years whose stores were reused, the scenes that could not be read."""

    stores: list[tuple[Path | None, int]]
    scenes: list
    reused: list[int] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)


def count_years(
    cfg: RunConfig, aoi, scenes, workdir: Path, timings: Timings, progress: Progress | None = None
) -> CountedYears:
    """Count ``scenes`` year by year into stores (``store.CompositeStore``) under ``compute.composite_dir``,
    or under ``workdir`` when none are kept, reusing every year whose store matches its scenes and
    settings. A scene that fails to read is set aside (``unreadable``) and its year counted again without
    it; a disk error is raised."""
    kept = cfg.compute.composite_dir is not None
    stores_at = store.CompositeStore(cfg.compute.composite_dir or workdir / "composites", checksums=kept)
    settings = classification_settings(cfg)
    result = CountedYears([], [])
    y, x = aoi.grid.coords["y"].values, aoi.grid.coords["x"].values
    years = {}  # year -> its first and last day in the period, its scenes
    for year in range(cfg.period.start.year, cfg.period.end.year + 1):
        y0, y1 = max(cfg.period.start, date(year, 1, 1)), min(cfg.period.end, date(year, 12, 31))
        years[year] = (y0, y1, [s for s in scenes if y0 <= date.fromisoformat(solar_day(s)) <= y1])
    stores: dict[int, Path | None] = {}
    while True:
        todo = {}  # year -> (key, its store being written)
        for year, (y0, y1, these) in years.items():
            if year in stores:
                continue
            if not these:  # no scene that year (or none readable): its months count zero
                stores[year] = None
                continue
            key = store.composite_key(aoi.grid, [s.id for s in these], settings)
            found = stores_at.load(year, key, len(month_starts(y0, y1)), aoi.grid.shape.yx)
            if found is not None:
                stores[year] = found
                result.reused.append(year)
            else:
                todo[year] = (
                    key,
                    stores_at.begin(
                        year,
                        key,
                        month_starts(y0, y1),
                        y,
                        x,
                        cfg.compute.store_chunk_px,
                        cfg.compute.chunk_px,
                        bool(evidence_months(cfg)),
                    ),
                )
        if not todo:
            break
        try:
            # every year's count tasks in one go: the two threads stay busy to the end of the last year,
            # not to the end of each
            log.info("counting the scenes of %s", ", ".join(map(str, todo)))
            with timings("count"), dask_progress(progress, "count"):
                scratch = Scratch()  # one set of work arrays per thread for all years' tasks
                dask.compute(
                    [
                        year_tasks(cfg, aoi, years[year][2], *years[year][:2], path, scratch)
                        for year, (_, path) in todo.items()
                    ]
                )
        except Exception as e:  # noqa: BLE001 - a reader error from any scene: find which and go on
            for _, path in todo.values():
                stores_at.abort(path)
            if isinstance(e, OSError) and e.errno is not None:
                raise  # the disk, not a scene: let the caller report it
            todo_scenes = [s for year in todo for s in years[year][2]]
            good = {s.id for s in _drop_unreadable(todo_scenes, result.unreadable, e)}
            years.update({year: (*years[year][:2], [s for s in years[year][2] if s.id in good]) for year in todo})
            continue
        for year, (key, path) in todo.items():
            stores[year] = stores_at.commit(year, key, path)
    result.stores = [(stores[year], len(month_starts(y0, y1))) for year, (y0, y1, _) in years.items()]
    result.scenes = [s for _, _, these in years.values() for s in these]
    return result
