"""The accuracy report's pooling and bootstrap (the long runs are `make evaluate`, not the suite)."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.lab import accuracy


def _counts(site_truth, site_found, site_pred, site_correct, **more):
    row = {
        k: 0.0
        for k in (
            "pond_truth",
            "pond_pred",
            "pond_found",
            "pond_correct",
            "pond_truth_det",
            "pond_found_det",
            "pond_year_n",
            "pond_year_exact",
            "clear_truth",
            "clear_pred",
            "clear_found",
            "clear_correct",
            "clear_a_truth",
            "clear_a_pred",
            "clear_a_inter",
            "clear_year_n",
            "clear_year_exact",
            "site_year_n",
            "site_year_exact",
            "site_year_within1",
            *(f"conf_{k}_{w}" for k in accuracy.CONFOUNDER_KINDS for w in ("area", "hit")),
        )
    }
    row.update(site_truth=site_truth, site_found=site_found, site_pred=site_pred, site_correct=site_correct, **more)
    return row


def test_pooled_metrics_weigh_seeds_by_their_features():
    # a 40-site window found perfectly and a 4-site window found half: pooled recall 42/44, not the mean 0.75
    c = pd.DataFrame(
        [
            _counts(40, 40, 40, 40, y2024_sites_truth=40, y2024_sites_run=40, y2024_area_truth=1e5, y2024_area_run=9e4),
            _counts(4, 2, 2, 2, y2024_sites_truth=4, y2024_sites_run=2, y2024_area_truth=1e5, y2024_area_run=1e5),
        ]
    )
    m = accuracy.metrics(c.sum())
    assert m["site_recall"] == pytest.approx(42 / 44)
    assert m["site_precision"] == 1.0
    assert m["rel_error_sites_2024"] == pytest.approx(-2 / 44)
    assert m["max_abs_rel_error_footprint"] == pytest.approx(0.05)
    assert np.isnan(m["pond_recall"])  # no truth ponds: undefined, not perfect


def test_an_undercount_is_told_apart_into_missed_and_merged_sites():
    # 20 truth sites: 2 never found, 4 found but merged pairwise into 2 run sites, 1 split in two
    c = pd.Series(_counts(20, 18, 17, 17, site_truth_merged=4, site_pred_merging=2, site_truth_split=1))
    m = accuracy.metrics(c)
    assert m["site_missed_share"] == pytest.approx(2 / 20)
    assert m["site_truth_merged_share"] == pytest.approx(4 / 20)
    assert m["site_truth_split_share"] == pytest.approx(1 / 20)


def test_clearing_iou_pools_areas():
    c = pd.Series(_counts(1, 1, 1, 1, clear_a_truth=100.0, clear_a_pred=80.0, clear_a_inter=60.0))
    assert accuracy.metrics(c)["clearing_iou"] == pytest.approx(60 / 120)


def test_bootstrap_interval_brackets_the_pooled_value_and_is_degenerate_for_identical_seeds():
    same = pd.DataFrame([_counts(10, 9, 10, 10)] * 5)
    lo, hi = accuracy.bootstrap(same, n=50)["site_recall"]
    assert lo == hi == pytest.approx(0.9)
    mixed = pd.DataFrame([_counts(10, 10, 10, 10), _counts(10, 5, 5, 5), _counts(10, 8, 8, 8)])
    lo, hi = accuracy.bootstrap(mixed, n=300)["site_recall"]
    assert lo < accuracy.metrics(mixed.sum())["site_recall"] < hi


def test_parse_seeds():
    assert accuracy.parse_seeds("100-103,110") == [100, 101, 102, 103, 110]


def test_false_detections_on_each_confounder_kind():
    def frame(geoms, **cols):
        return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries(geoms, crs="EPSG:32647"), crs="EPSG:32647")

    conf = frame([shapely.box(0, 0, 100, 1000), shapely.box(1000, 0, 1100, 100)], kind=["river", "fish_pond"])
    # site 0: two ponds and a clearing on the river, matching nothing; site 1: a true site whose stray
    # pond sits on the fish pond
    ponds = frame(
        [shapely.box(0, 0, 20, 20), shapely.box(0, 500, 20, 520), shapely.box(1000, 0, 1020, 20)], site_id=[0, 0, 1]
    )
    clearings = frame([shapely.box(50, 0, 150, 100)], site_id=[0])
    sites = frame([shapely.box(0, 0, 150, 520), shapely.box(1000, 0, 1020, 20)], site_id=[0, 1])
    e = accuracy.confounder_errors(
        conf, ponds, clearings, sites, site_ok=np.array([False, True]), pond_ok=np.array([False, False, False])
    )
    assert e["river"] == {"false_sites": 1, "false_ponds": 2, "claimed_m2": 800.0 + 5000.0, "area_m2": 1e5}
    assert e["fish_pond"]["false_sites"] == 0 and e["fish_pond"]["false_ponds"] == 1
    # pooled over seeds: summed, and undefined (not zero) for the kinds no seed has
    row = {**_counts(1, 1, 1, 1), **accuracy._confounder_counts(e)}
    m = accuracy.metrics(pd.DataFrame([row, row]).sum())
    assert m["confounder_river_false_ponds"] == 4 and m["confounder_river_claimed_m2"] == 11600.0
    assert np.isnan(m["confounder_road_cut_false_sites"])
