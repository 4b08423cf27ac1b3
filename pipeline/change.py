"""When did a feature appear, and did it stay? Persistence over monthly counts.

A pixel's feature *starts* in the first month in which most of its clear views show it and after
which, within a window, at least a ``persistence`` fraction of clear views still show it. A cloud
edge that SCL missed shows up once and is gone; a swidden field is bare for one dry season and
then green; a leaching site stays. Counts (not single images) make this insensitive to how many
scenes a month had.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

NONE = -1


def _window_sum(counts: np.ndarray, window: int) -> np.ndarray:
    """Sum over months m .. m+window-1 (truncated at the end) along the last axis."""
    c = np.cumsum(counts, axis=-1, dtype=np.int32)
    c = np.concatenate([np.zeros(c.shape[:-1] + (1,), np.int32), c], axis=-1)
    n = counts.shape[-1]
    hi = np.minimum(np.arange(n) + window, n)
    return c[..., hi] - c[..., :n]


def persistent_onset(valid: np.ndarray, hits: np.ndarray, window: int, persistence: float,
                     min_obs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset month index, last month index and months seen, per pixel; months on the last axis.

    Returns ``(onset, last, months_seen)``: onset is the first month whose clear views show the
    feature in the majority and are followed, within ``window`` months, by >= ``min_obs`` clear views
    of which >= ``persistence`` show it (NONE if never); last is the last month in which most clear
    views showed it (NONE if never after onset); months_seen = last - onset + 1 (0 if none).
    """
    valid = valid.astype(np.int32)
    hits = hits.astype(np.int32)
    majority = (hits > 0) & (2 * hits >= valid)
    vw, hw = _window_sum(valid, window), _window_sum(hits, window)
    candidate = majority & (vw >= min_obs) & (hw >= persistence * vw)
    has = candidate.any(axis=-1)
    onset = np.where(has, candidate.argmax(axis=-1), NONE)
    n = valid.shape[-1]
    last_majority = n - 1 - majority[..., ::-1].argmax(axis=-1)
    last = np.where(has, last_majority, NONE)
    seen = np.where(has, last - onset + 1, 0)
    return onset.astype(np.int16), last.astype(np.int16), seen.astype(np.int16)


def onset_maps(valid: xr.DataArray, hits: xr.DataArray, window: int, persistence: float,
               min_obs: int) -> xr.Dataset:
    """``persistent_onset`` over (month, y, x) counts, lazily when they are dask-backed.

    The month axis is brought into one chunk (per spatial chunk) since onset needs each pixel's
    whole record; spatial chunks are left as they are.
    """
    if valid.chunks is not None:
        valid, hits = valid.chunk({"month": -1}), hits.chunk({"month": -1})
    onset, last, seen = xr.apply_ufunc(
        persistent_onset, valid, hits,
        input_core_dims=[["month"], ["month"]], output_core_dims=[[], [], []],
        kwargs=dict(window=window, persistence=persistence, min_obs=min_obs),
        dask="parallelized", output_dtypes=[np.int16, np.int16, np.int16],
    )
    return xr.Dataset({"onset": onset, "last": last, "months_seen": seen})


def share_while_active(onset: np.ndarray, last: np.ndarray, valid: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Fraction of a pixel's clear views from its onset to its last month that show ``hits``; NaN
    without onset. Months on the last axis; ``onset`` and ``last`` as from ``persistent_onset``.
    Only the active span counts, so an abandoned mine greening afterwards still reads as never green.
    """
    m = np.arange(valid.shape[-1])
    active = (m >= np.asarray(onset)[..., None]) & (m <= np.asarray(last)[..., None])
    v = np.where(active, valid, 0).sum(axis=-1)
    h = np.where(active, hits, 0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((onset >= 0) & (v > 0), h / v, np.nan).astype(np.float32)


def share_while_active_maps(maps: xr.Dataset, valid: xr.DataArray, hits: xr.DataArray) -> xr.DataArray:
    """``share_while_active`` over (month, y, x) counts and ``onset_maps`` output, lazily when dask-backed."""
    if valid.chunks is not None:
        valid, hits = valid.chunk({"month": -1}), hits.chunk({"month": -1})
    return xr.apply_ufunc(share_while_active, maps["onset"], maps["last"], valid, hits,
                          input_core_dims=[[], [], ["month"], ["month"]],
                          dask="parallelized", output_dtypes=[np.float32])


def lead_onset(onset: np.ndarray, earlier: np.ndarray, lead: int) -> np.ndarray:
    """``onset`` moved back to ``earlier`` where that precedes it by 1..``lead`` months (NONE stays NONE):
    the month a change began, when a weaker sign of it (a canopy gone before the ground reads bare)
    came just before the strict onset."""
    onset, earlier = np.asarray(onset), np.asarray(earlier)
    take = (onset >= 0) & (earlier >= 0) & (earlier < onset) & (onset - earlier <= lead)
    return np.where(take, earlier, onset).astype(onset.dtype)


def dip_onset(onset: np.ndarray, valid: np.ndarray, index_sum: np.ndarray, lead: int, drop: float,
              baseline_months: int = 12) -> np.ndarray:
    """The earliest of the ``lead`` months before ``onset`` from which every month with a clear view has a
    mean index (``index_sum / valid``) at least ``drop`` below its mean over the ``baseline_months``
    before them; NONE where there is none (or no onset, or no baseline views). Months on the last axis.

    Felling thins the canopy over weeks before the ground reads bare: forest NDVI is steady, so a month
    whose views average well below the pixel's year before is when the cut began.
    """
    onset = np.asarray(onset).astype(np.int64)
    valid = valid.astype(np.float64)
    n = valid.shape[-1]
    cv = np.concatenate([np.zeros(valid.shape[:-1] + (1,)), np.cumsum(valid, axis=-1)], axis=-1)
    cs = np.concatenate([np.zeros(valid.shape[:-1] + (1,)), np.cumsum(index_sum, axis=-1, dtype=np.float64)], axis=-1)

    def span(c, a, b):  # sum over months a .. b-1 (clipped to the record), per pixel
        a, b = np.clip(a, 0, n), np.clip(b, 0, n)
        return np.take_along_axis(c, b[..., None], -1)[..., 0] - np.take_along_axis(c, a[..., None], -1)[..., 0]

    out = np.full(onset.shape, NONE, np.int64)
    ok = np.ones(onset.shape, bool)  # every month from the candidate to the onset is below (or unseen)
    for k in range(1, lead + 1):
        c = onset - k
        base_v = span(cv, c - baseline_months, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            base = span(cs, c - baseline_months, c) / base_v
            v = span(cv, c, c + 1)
            mean = span(cs, c, c + 1) / v
        below = np.where(v > 0, mean < base - drop, True)
        ok &= (onset >= 0) & (c >= 0) & (base_v > 0) & below
        out = np.where(ok & (v > 0), c, out)
    return out.astype(np.int16)


def dip_onset_maps(onset: xr.DataArray, valid: xr.DataArray, index_sum: xr.DataArray, lead: int,
                   drop: float) -> xr.DataArray:
    """``dip_onset`` over (month, y, x) counts and sums, lazily when they are dask-backed."""
    if valid.chunks is not None:
        valid, index_sum = valid.chunk({"month": -1}), index_sum.chunk({"month": -1})
    return xr.apply_ufunc(dip_onset, onset, valid, index_sum, input_core_dims=[[], ["month"], ["month"]],
                          kwargs=dict(lead=lead, drop=drop), dask="parallelized", output_dtypes=[np.int16])


def month_to_year(index: np.ndarray, months) -> np.ndarray:
    """Calendar year of month indices into ``months`` (a DatetimeIndex); NONE stays NONE."""
    years = np.asarray(months.year, dtype=np.int16)
    idx = np.asarray(index)
    return np.where(idx >= 0, years[np.clip(idx, 0, len(years) - 1)], NONE).astype(np.int16)
