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


def select_clearings(clearings: gpd.GeoDataFrame, rules: ClearingRules) -> gpd.GeoDataFrame:
    """Bare patches large enough and on a hillside (flat bare land in valleys is paddy or river bar).
    Where the slope is unknown (no DEM) the slope rule cannot be applied and is skipped."""
    keep = clearings["area_m2"] >= rules.min_area_m2
    slope = clearings["mean_slope_deg"]
    keep &= slope.isna() | (slope >= rules.min_slope_deg)
    return clearings[keep]


def select_ponds(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, rules: PondRules) -> gpd.GeoDataFrame:
    """Water bodies of pond size that lie next to a cleared hillside."""
    keep = (ponds["area_m2"] >= rules.min_area_m2) & (ponds["area_m2"] <= rules.max_area_m2)
    ponds = ponds[keep]
    if ponds.empty or clearings.empty:
        return ponds.iloc[:0]
    near, _ = clearings.sindex.query(ponds.geometry.values, predicate="dwithin",
                                     distance=rules.max_distance_to_clearing_m)
    return ponds.iloc[np.unique(near)]
