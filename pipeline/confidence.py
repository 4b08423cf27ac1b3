"""Confidence and evidence for every polygon: how sure, on how many clear views, since when, and why.

An analyst who publishes a count sorts by confidence and checks the weakest first. Every polygon
carries what that check needs: ``n_clear_obs`` (clear views of its pixels while it was active),
``first_seen`` / ``last_seen`` (the months its pixels first and last showed it, medians over the
pixels as ``first_year`` is), and the index values behind the decision (mean MNDWI / NDVI / BSI of
those clear views, and the share of them that showed water or bare soil).

``confidence`` (0-1) is the geometric mean of terms that are each 0-1:

* *evidence*: ``1 - exp(-n_clear_obs / OBS_SCALE)``: a pond seen in 3 clear views is a guess, in 30 a fact;
* *consistency*: the share of clear views while active that showed the class (and, for clearings,
  the share that did not show green vegetation);
* *margin*: how far the mean index lies beyond its threshold, through a logistic of width
  ``*_MARGIN_SCALE``: a pond whose mean MNDWI sits on the -0.2 threshold is a coin toss (0.5);
* for clearings, *duration*: months seen over the months a lone clearing needs to anchor a site.

A geometric mean lets any one weak term pull the confidence down without one perfect term hiding it.
A site's confidence is that at least one of its features is real (``1 - prod(1 - c)``): a site of
twenty ponds is surer than any single pool. It is a ranking score, not a calibrated probability;
``reports/accuracy.md`` shows the precision by confidence band on the reporting seeds.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.change import active_sum, share_while_active
from pipeline.rules import ClearingRules, PondRules

OBS_SCALE = 8.0  # clear views while active at which the evidence term reaches 1 - 1/e
MNDWI_MARGIN_SCALE = 0.1  # MNDWI of mixed pond pixels spreads ~0.1 around the threshold
BSI_MARGIN_SCALE = 0.05  # BSI of laterite is 0.1-0.3, of stubble ~0: a 0.05 step is meaningful

POND_EVIDENCE = ("n_clear_obs", "water_share", "mndwi_mean", "ndvi_mean")
CLEARING_EVIDENCE = ("n_clear_obs", "bsi_mean", "ndvi_mean")
COLUMNS = ("confidence", "n_clear_obs", "first_seen", "last_seen")  # on every layer


# ------------------------------------------------------------------------------------- per pixel


def active_total(onset: np.ndarray, last: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of ``counts`` (months on the last axis) from each pixel's onset to its last month; 0 without onset."""
    return active_sum(onset, last, counts).astype(np.int32)


def evidence(
    onset: np.ndarray,
    last: np.ndarray,
    valid: np.ndarray,
    hits: np.ndarray | None,
    sums: dict[str, tuple[np.ndarray, float]],
) -> dict[str, np.ndarray]:
    """``evidence_maps`` on numpy: months on the last axis, each sum with what one of its units is worth."""
    out = {"n_clear_obs": active_total(onset, last, valid)}
    if hits is not None:
        out["water_share"] = share_while_active(onset, last, valid, hits)
    for name, (s, scale) in sums.items():
        out[f"{name}_mean"] = share_while_active(onset, last, valid, s) * np.float32(scale)
    return out


# ------------------------------------------------------------------------------------- per polygon


def _evidence(n) -> np.ndarray:
    return 1.0 - np.exp(-np.asarray(n, dtype=float) / OBS_SCALE)


def _margin(value, threshold: float, scale: float, above: bool = True) -> np.ndarray:
    d = (np.asarray(value, dtype=float) - threshold) / scale
    return 1.0 / (1.0 + np.exp(-d if above else d))


def _geomean(*terms) -> np.ndarray:
    t = np.clip(np.vstack([np.nan_to_num(np.asarray(x, dtype=float), nan=0.0) for x in terms]), 0.0, 1.0)
    return np.exp(np.log(np.maximum(t, 1e-9)).mean(axis=0)) * (t > 0).all(axis=0)


def _month(index, months) -> list[str]:
    """Median month index -> 'YYYY-MM' (ISO 8601 month)."""
    idx = np.clip(np.floor(np.asarray(index, dtype=float)).astype(int), 0, len(months) - 1)
    return [months[i].strftime("%Y-%m") for i in idx]


def pond_confidence(ponds: gpd.GeoDataFrame, months, rules: PondRules) -> gpd.GeoDataFrame:
    """``confidence``, ``first_seen``, ``last_seen`` on ponds carrying the median ``POND_EVIDENCE``
    and ``onset_month`` / ``last_month`` columns (as ``features`` builds them)."""
    out = ponds.copy()
    out["confidence"] = _geomean(
        _evidence(out["n_clear_obs"]),
        out["water_share"],
        _margin(out["mndwi_mean"], rules.mndwi_min, MNDWI_MARGIN_SCALE),
    ).astype(np.float32)
    return _dates(out, months)


def clearing_confidence(clearings: gpd.GeoDataFrame, months, rules: ClearingRules) -> gpd.GeoDataFrame:
    """As :func:`pond_confidence`, for clearings (``bare_share``, ``green_share``, ``CLEARING_EVIDENCE``)."""
    out = clearings.copy()
    duration = np.minimum(out["months_seen"].to_numpy(dtype=float) / rules.alone_min_months, 1.0)
    out["confidence"] = _geomean(
        _evidence(out["n_clear_obs"]),
        out["bare_share"],
        1.0 - out["green_share"],
        _margin(out["bsi_mean"], rules.bsi_min, BSI_MARGIN_SCALE),
        duration,
    ).astype(np.float32)
    return _dates(out, months)


def _dates(gdf: gpd.GeoDataFrame, months) -> gpd.GeoDataFrame:
    gdf["n_clear_obs"] = np.floor(gdf["n_clear_obs"].to_numpy(dtype=float)).astype(np.int32)
    if len(gdf):
        gdf["first_seen"] = _month(gdf["onset_month"], months)
        gdf["last_seen"] = _month(gdf["last_month"], months)
    else:
        gdf["first_seen"] = gdf["last_seen"] = pd.Series(dtype=object)
    return gdf.drop(columns=["onset_month", "last_month"])


def site_confidence(sites: gpd.GeoDataFrame, ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Sites take ``1 - prod(1 - c)`` over their features, the most clear views of any feature, the
    earliest ``first_seen`` and the latest ``last_seen``."""
    members = pd.concat([ponds[["site_id", *COLUMNS]], clearings[["site_id", *COLUMNS]]], ignore_index=True)
    groups = members.groupby("site_id").indices
    conf, n_obs = members["confidence"].to_numpy(dtype=float), members["n_clear_obs"].to_numpy()
    first, last = members["first_seen"].to_numpy(dtype=object), members["last_seen"].to_numpy(dtype=object)
    # per site on plain arrays ('YYYY-MM' sorts as text): pandas' min of strings went through pyarrow,
    # whose import alone cost more than all of this
    rows = [
        (1.0 - float(np.prod(1.0 - conf[i])), n_obs[i].max(), min(first[i]), max(last[i]))
        if i is not None
        else (np.nan, 0, np.nan, np.nan)
        for i in map(groups.get, sites["site_id"].to_numpy())
    ]
    conf, n_obs, first, last = zip(*rows) if rows else ((), (), (), ())
    out = sites.copy()
    out["confidence"] = np.array(conf, dtype=np.float32)
    out["n_clear_obs"] = np.array(n_obs, dtype=np.int32)
    out["first_seen"] = np.array(first, dtype=object)
    out["last_seen"] = np.array(last, dtype=object)
    return out
