"""Confidence and evidence of polygons, on small rasters whose answer is known."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr

from pipeline import confidence
from pipeline.lab import xarray_reference as xr_ref
from pipeline.lab.xarray_reference import onset_maps
from pipeline.rules import ClearingRules, PondRules


def _cube(values, name):
    v = np.asarray(values, dtype=np.float32)
    return xr.DataArray(v, dims=("month",), name=name)


def test_evidence_counts_only_the_active_span_and_averages_indices_over_clear_views():
    # 8 months: no pond for 3 months, then a pond seen in 2 of 2, 3 of 3 ... clear views until the end
    valid = _cube([2, 2, 2, 2, 3, 1, 2, 2], "valid")
    pond = _cube([0, 0, 0, 2, 3, 1, 2, 2], "pond")
    mndwi_sum = _cube([-0.8, -0.8, -0.8, 1.2, 1.5, 0.6, 1.0, 1.0], "mndwi")  # pond months average 0.5 a view
    maps = onset_maps(valid, pond, window=4, persistence=0.6, min_obs=3)
    assert int(maps["onset"]) == 3 and int(maps["last"]) == 7
    ev = xr_ref.evidence_maps(maps, valid, pond, {"mndwi": mndwi_sum})
    assert int(ev["n_clear_obs"]) == 10
    assert float(ev["water_share"]) == pytest.approx(1.0)
    assert float(ev["mndwi_mean"]) == pytest.approx(5.3 / 10)


def test_evidence_is_zero_or_nan_without_onset():
    valid, hits = _cube([3, 3, 3], "valid"), _cube([0, 0, 0], "pond")
    maps = onset_maps(valid, hits, window=3, persistence=0.6, min_obs=3)
    ev = xr_ref.evidence_maps(maps, valid, hits, {"ndvi": _cube([2.4, 2.4, 2.4], "ndvi")})
    assert int(ev["n_clear_obs"]) == 0 and np.isnan(float(ev["ndvi_mean"]))


def _ponds(**cols):
    n = len(next(iter(cols.values())))
    return gpd.GeoDataFrame(
        {"onset_month": [0.0] * n, "last_month": [5.0] * n, **cols},
        geometry=[shapely.box(i * 100, 0, i * 100 + 20, 20) for i in range(n)],
        crs=32647,
    )


def test_pond_confidence_rises_with_clear_views_consistency_and_margin():
    months = pd.date_range("2021-01-01", periods=6, freq="MS")
    p = confidence.pond_confidence(
        _ponds(n_clear_obs=[30, 3, 30, 30], water_share=[1.0, 1.0, 0.6, 1.0], mndwi_mean=[0.6, 0.6, 0.6, -0.2]),
        months,
        PondRules(),
    )
    c = p["confidence"].to_numpy()
    assert ((c >= 0) & (c <= 1)).all()
    assert c[0] > 0.9  # 30 clear views, always water, MNDWI far above -0.2
    assert c[0] > c[2] > c[1] and c[0] > c[3]  # few views are worse than a weaker share
    # on the threshold the margin term is 0.5: geometric mean of (~0.98, 1, 0.5)
    assert c[3] == pytest.approx((0.5 * (1 - np.exp(-30 / 8))) ** (1 / 3), abs=1e-3)
    assert p["first_seen"].tolist() == ["2021-01"] * 4 and p["last_seen"].tolist() == ["2021-06"] * 4
    assert "onset_month" not in p.columns


def test_young_or_greening_clearings_are_less_sure():
    months = pd.date_range("2021-01-01", periods=6, freq="MS")
    rules = ClearingRules()
    c = confidence.clearing_confidence(
        _ponds(
            n_clear_obs=[40, 40, 40],
            bare_share=[1.0, 1.0, 0.85],
            green_share=[0.0, 0.0, 0.1],
            bsi_mean=[0.2, 0.2, 0.2],
            months_seen=[24, 3, 24],
        ),
        months,
        rules,
    )["confidence"].to_numpy()
    assert c[0] > 0.95 and c[1] < c[0] and c[2] < c[0]


def test_site_confidence_is_that_any_feature_is_real():
    cols = {
        "confidence": [0.5, 0.5, 0.9],
        "n_clear_obs": [10, 20, 5],
        "first_seen": ["2021-03", "2020-11", "2022-01"],
        "last_seen": ["2022-01", "2023-05", "2024-12"],
    }
    ponds = pd.DataFrame({"site_id": [1, 1, 2], **cols})
    clearings = pd.DataFrame({"site_id": [], **{k: [] for k in cols}})
    sites = gpd.GeoDataFrame({"site_id": [1, 2]}, geometry=[shapely.box(0, 0, 1, 1)] * 2, crs=32647)
    s = confidence.site_confidence(sites, ponds, clearings)
    assert s["confidence"].tolist() == pytest.approx([0.75, 0.9])
    assert s["n_clear_obs"].tolist() == [20, 5]
    assert s["first_seen"].tolist() == ["2020-11", "2022-01"] and s["last_seen"].tolist() == ["2023-05", "2024-12"]
