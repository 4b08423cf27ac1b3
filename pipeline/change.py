"""When did a feature appear, and did it stay? Persistence over monthly counts.

A pixel's feature *starts* in the first month in which most of its clear views show it and after
which, within a window, at least a ``persistence`` fraction of clear views still show it. A cloud
edge that SCL missed shows up once and is gone; a swidden field is bare for one dry season and
then green; a leaching site stays. Counts (not single images) make this insensitive to how many
scenes a month had.
"""

from __future__ import annotations

import numba
import numpy as np

NONE = -1


def _as3d(a) -> np.ndarray:
    """A view of ``a`` with months last and two pixel axes before them (never a copy: month records
    arrive month-first from the stores, and transposing them was the onset stage's main cost)."""
    a = np.asarray(a)
    return a.reshape((1,) * (3 - a.ndim) + a.shape)


@numba.njit(nogil=True, cache=True)
def _onset_kernel(valid, hits, window, persistence, min_obs, onset, last):
    ny, nx, n = valid.shape
    cv = np.zeros(n + 1, np.int64)  # prefix sums of one pixel's record
    ch = np.zeros(n + 1, np.int64)
    # the first month whose views show the feature in the majority, for every pixel at once, month by
    # month along rows: the records come month-first, so this streams through memory, where a scan per
    # pixel jumped a month's plane at every step; most pixels never do, and need nothing more
    firsts = np.full((ny, nx), n, np.int32)
    for m in range(n):
        for y in range(ny):
            for x in range(nx):
                h = hits[y, x, m]
                if (h > 0) & (2 * h >= valid[y, x, m]) & (firsts[y, x] == n):
                    firsts[y, x] = m
    for y in range(ny):
        for x in range(nx):
            onset[y, x] = NONE
            last[y, x] = NONE
            first = firsts[y, x]
            if first == n:
                continue
            for m in range(n):
                cv[m + 1] = cv[m] + valid[y, x, m]
                ch[m + 1] = ch[m] + hits[y, x, m]
            for m in range(first, n):
                h, v = hits[y, x, m], valid[y, x, m]
                if h > 0 and 2 * h >= v:
                    hi = min(m + window, n)
                    vw, hw = cv[hi] - cv[m], ch[hi] - ch[m]
                    if vw >= min_obs and hw >= persistence * vw:
                        onset[y, x] = m
                        break
            if onset[y, x] != NONE:
                for m in range(n - 1, -1, -1):
                    h, v = hits[y, x, m], valid[y, x, m]
                    if h > 0 and 2 * h >= v:
                        last[y, x] = m
                        break


def persistent_onset(
    valid: np.ndarray, hits: np.ndarray, window: int, persistence: float, min_obs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset month index, last month index and months seen, per pixel; months on the last axis.

    Returns ``(onset, last, months_seen)``: onset is the first month whose clear views show the
    feature in the majority and are followed, within ``window`` months, by >= ``min_obs`` clear views
    of which >= ``persistence`` show it (NONE if never); last is the last month in which most clear
    views showed it (NONE if never after onset); months_seen = last - onset + 1 (0 if none).
    Compiled: the month records of a large AOI are billions of values.
    """
    v3, h3 = _as3d(valid), _as3d(hits)
    onset, last = np.empty(v3.shape[:2], np.int16), np.empty(v3.shape[:2], np.int16)
    _onset_kernel(v3, h3, int(window), float(persistence), int(min_obs), onset, last)
    shape = np.shape(valid)[:-1]
    onset, last = onset.reshape(shape), last.reshape(shape)
    seen = np.where(onset >= 0, last - onset + 1, 0).astype(np.int16)
    return onset, last, seen


@numba.njit(nogil=True, cache=True)
def _span_kernel(onset, last, values, out):
    for y in range(values.shape[0]):
        for x in range(values.shape[1]):
            total = 0.0
            for m in range(max(onset[y, x], 0), last[y, x] + 1):
                total += values[y, x, m]
            out[y, x] = total


def active_sum(onset: np.ndarray, last: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum (float64) of ``values`` (months on the last axis) from each pixel's onset to its last
    month, both included; 0 without onset (``last`` is NONE then)."""
    v3 = _as3d(values)
    out = np.empty(v3.shape[:2], np.float64)
    _span_kernel(np.asarray(onset).reshape(v3.shape[:2]), np.asarray(last).reshape(v3.shape[:2]), v3, out)
    return out.reshape(np.shape(values)[:-1])


def share_while_active(onset: np.ndarray, last: np.ndarray, valid: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Fraction of a pixel's clear views from its onset to its last month that show ``hits``; NaN
    without onset. Months on the last axis; ``onset`` and ``last`` as from ``persistent_onset``.
    Only the active span counts, so an abandoned mine greening afterwards still reads as never green.
    """
    v, h = active_sum(onset, last, valid), active_sum(onset, last, hits)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((np.asarray(onset) >= 0) & (v > 0), h / v, np.nan).astype(np.float32)


def lead_onset(onset: np.ndarray, earlier: np.ndarray, lead: int) -> np.ndarray:
    """``onset`` moved back to ``earlier`` where that precedes it by 1..``lead`` months (NONE stays NONE):
    the month a change began, when a weaker sign of it (a canopy gone before the ground reads bare)
    came just before the strict onset."""
    onset, earlier = np.asarray(onset), np.asarray(earlier)
    take = (onset >= 0) & (earlier >= 0) & (earlier < onset) & (onset - earlier <= lead)
    return np.where(take, earlier, onset).astype(onset.dtype)


@numba.njit(nogil=True, cache=True)
def _dip_kernel(onset, valid, index_sum, lead, drop, baseline_months, out):
    for y in range(valid.shape[0]):
        for x in range(valid.shape[1]):
            out[y, x] = NONE
            o = onset[y, x]
            if o < 0:
                continue
            for k in range(1, lead + 1):
                c = o - k
                if c < 0:
                    break
                base_v, base_s = 0.0, 0.0
                for m in range(max(c - baseline_months, 0), c):
                    base_v += valid[y, x, m]
                    base_s += index_sum[y, x, m]
                if base_v == 0:
                    break
                v = float(valid[y, x, c])
                if v > 0 and not index_sum[y, x, c] / v < base_s / base_v - drop:
                    break  # a clear month as green as before: the cut began after it
                if v > 0:
                    out[y, x] = c


def dip_onset(
    onset: np.ndarray, valid: np.ndarray, index_sum: np.ndarray, lead: int, drop: float, baseline_months: int = 12
) -> np.ndarray:
    """The earliest of the ``lead`` months before ``onset`` from which every month with a clear view has a
    mean index (``index_sum / valid``) at least ``drop`` below its mean over the ``baseline_months``
    before them; NONE where there is none (or no onset, or no baseline views). Months on the last axis.

    Felling thins the canopy over weeks before the ground reads bare: forest NDVI is steady, so a month
    whose views average well below the pixel's year before is when the cut began.
    """
    v3, s3 = _as3d(valid), _as3d(index_sum)
    out = np.empty(v3.shape[:2], np.int16)
    _dip_kernel(
        np.asarray(onset).reshape(v3.shape[:2]).astype(np.int64),
        v3,
        s3,
        int(lead),
        float(drop),
        int(baseline_months),
        out,
    )
    return out.reshape(np.shape(valid)[:-1])


def month_to_year(index: np.ndarray, months) -> np.ndarray:
    """Calendar year of month indices into ``months`` (a DatetimeIndex); NONE stays NONE."""
    # NONE (-1) indexes the table's last entry, NONE itself: one lookup per pixel
    table = np.append(np.asarray(months.year, dtype=np.int16), np.int16(NONE))
    return table[np.asarray(index)]
