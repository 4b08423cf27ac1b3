"""Rule-based classifiers: per clear observation (pixel level) and per feature (object level).

Every threshold comes from the config, where each is explained.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import xarray as xr

from pipeline.config import ClearingRules, PondRules


def pond_like(ind: xr.Dataset, valid: xr.DataArray, rules: PondRules) -> xr.DataArray:
    """Clear observations that look like open water."""
    return (valid & (ind["mndwi"] > rules.mndwi_min) & (ind["ndvi"] < rules.ndvi_max)).rename("pond_like")


def bare_like(ind: xr.Dataset, valid: xr.DataArray, rules: ClearingRules, water: xr.DataArray) -> xr.DataArray:
    """Clear observations of bare soil (laterite, fresh cuts) that are not water: turbid water next to
    laterite (a pond pixel whose 20 m SWIR is mixed with its bank) can have a positive BSI too."""
    return (valid & ~water & (ind["ndvi"] < rules.ndvi_max) & (ind["bsi"] > rules.bsi_min)).rename("bare_like")


def green_like(ind: xr.Dataset, valid: xr.DataArray, rules: ClearingRules) -> xr.DataArray:
    """Clear observations of green vegetation: rice on a paddy, regrowth on a swidden or a healing scar."""
    return (valid & (ind["ndvi"] > rules.green_ndvi_min)).rename("green_like")


def select_clearings(clearings: gpd.GeoDataFrame, rules: ClearingRules, months=None) -> gpd.GeoDataFrame:
    """Bare patches that are large enough, stay bare and never green while active; each gets
    ``persistent``: whether it may make a site on its own, without a pond near it, and ``provisional``:
    whether it may do so only because the record (``months``, a DatetimeIndex of month starts; clearings
    carry median ``onset_month`` / ``last_month`` indices into it) ends before it could stay bare long
    enough to be ``persistent``, and it did not start when swiddens are cut unless it outlasted their rice.
    Both flags need a clearing on a hillside, not strip-shaped (unless bare for ``strip_min_months``), that
    reads as laterite (``bsi_mean``, where the table has it). Where the slope is unknown (no DEM) the slope
    rule cannot be applied and is skipped."""
    # the size rule is on the pixels that were bare, before edges were grown: grown edges are no
    # evidence of a clearing, only of its outline
    core = clearings["core_area_m2"] if "core_area_m2" in clearings else clearings["area_m2"]
    keep = core >= rules.min_area_m2
    keep &= (clearings["bare_share"] >= rules.min_bare_share) & (clearings["green_share"] <= rules.max_green_share)
    out = clearings[keep].copy()
    slope = out["mean_slope_deg"]
    strip_ok = (out["elongation"] <= rules.alone_max_elongation) | (out["months_seen"] >= rules.strip_min_months)
    shape_ok = strip_ok & (slope.isna() | (slope >= rules.alone_min_slope_deg))
    if "bsi_mean" in out:  # laterite, not a scar's grey debris under returning shrub
        shape_ok &= out["bsi_mean"].isna() | (out["bsi_mean"] >= rules.alone_min_bsi)
    out["persistent"] = (out["months_seen"] >= rules.alone_min_months) & shape_ok
    if months is None or rules.provisional_recent_months == 0 or "onset_month" not in out or out.empty:
        out["provisional"] = False
        return out
    n = len(months)
    # still bare at the end of the record, so its months_seen is cut short by the record, not by regrowth
    # (months_seen runs from the bare onset to the last bare month: short and ending now = started late)
    recent = out["last_month"] >= n - rules.provisional_recent_months
    at = lambda col: months[np.clip(np.floor(out[col].to_numpy(dtype=float)).astype(int), 0, n - 1)]  # noqa: E731
    onset, last = at("onset_month"), at("last_month")
    swidden_season = np.isin(onset.month, rules.swidden_start_months)
    outlasted_rice = (last.year > onset.year) | (last.month >= rules.provisional_bare_until_month)
    out["provisional"] = ~out["persistent"] & shape_ok & recent & (~swidden_season | outlasted_rice)
    return out


def select_ponds(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, rules: PondRules) -> gpd.GeoDataFrame:
    """Water bodies of pond size, confirmed in more than one month, that lie next to a cleared hillside
    or have held water for ``alone_min_months``."""
    keep = (ponds["area_m2"] >= rules.min_area_m2) & (ponds["area_m2"] <= rules.max_area_m2)
    keep &= ponds["months_seen"] >= rules.min_months_seen
    ponds = ponds[keep]
    lasting = ponds["months_seen"].to_numpy() >= rules.alone_min_months
    if ponds.empty or clearings.empty:
        return ponds[lasting]
    near, _ = clearings.sindex.query(ponds.geometry.values, predicate="dwithin",
                                     distance=rules.max_distance_to_clearing_m)
    return ponds[np.isin(np.arange(len(ponds)), near) | lasting]
