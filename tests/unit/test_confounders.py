"""What separates a leaching site from the other things Kachin valleys hold, rule by rule, on small
rasters and tables made here: rivers and streams, fish ponds, gold workings, road cuts."""

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline import classify
from pipeline.rules import ClearingRules, PondRules

RES = 10.0


def _stream(shape, rows, width_px, rng, breaks=0):
    """A meandering line of water ``width_px`` wide across ``shape``, broken every ``breaks`` columns
    by a gap of two (where its mixed pixels fell short of the water rule)."""
    water = np.zeros(shape, bool)
    ny, nx = shape
    phase, wavelength = rng.uniform(0, 2 * np.pi), rng.uniform(60, 120)
    course = (rows + 0.05 * ny * np.sin(2 * np.pi * np.arange(nx + 1) / wavelength + phase)).astype(int)
    for x in range(nx):
        if breaks and x % breaks < 2:
            continue
        y0, y1 = sorted((course[x], course[x + 1]))  # a bend runs down a few rows within one column
        water[max(y0, 0) : min(y1 + width_px, ny), x] = True
    return water


def _pool_cluster(shape, top, left, n_rows, n_cols, spacing_px=2):
    """A terrace of one-pixel leach pools, as the mapped Pang War pools lie (about 15 m apart)."""
    water = np.zeros(shape, bool)
    water[top : top + n_rows * spacing_px : spacing_px, left : left + n_cols * spacing_px : spacing_px] = True
    return water


@pytest.mark.parametrize("width_px,breaks", [(1, 4), (1, 0), (2, 3), (5, 0), (6, 8)])
def test_a_river_of_any_width_is_a_network_even_broken_into_pieces(width_px, breaks):
    rng = np.random.default_rng(width_px)
    water = _stream((200, 150), 100, width_px, rng, breaks)  # 1.5 km across the window
    net = classify.water_network(water, RES, 500.0, 20.0)
    assert net[water].mean() > 0.95


def test_leach_pool_clusters_and_terraces_are_not_a_network():
    shape = (200, 200)
    cluster = _pool_cluster(shape, 20, 20, 8, 8)  # 8 x 8 pools over 150 m
    terrace = _pool_cluster(shape, 120, 20, 1, 12)  # a row of 12 pools along the contour, 230 m
    lone = np.zeros(shape, bool)
    lone[180, 180] = True
    water = cluster | terrace | lone
    assert not classify.water_network(water, RES, 500.0, 20.0).any()


def test_a_pond_beside_a_river_is_not_swallowed_by_it():
    rng = np.random.default_rng(0)
    river = _stream((200, 150), 60, 3, rng)
    pond = np.zeros_like(river)
    pond[150:154, 70:74] = True  # 4 x 4 pixels, well off the river
    net = classify.water_network(river | pond, RES, 500.0, 20.0)
    assert net[river].all() and not net[pond].any()


def test_a_road_cut_is_narrow_however_it_winds_a_clearing_with_ponds_is_not():
    labels = np.zeros((120, 120), np.int32)
    for k, x in enumerate(range(10, 110, 20)):  # a road of hairpins, 2 px wide
        labels[10:100, x : x + 2] = 1
        y = 98 if k % 2 == 0 else 10
        labels[y : y + 2, x : x + 22] = 1
    labels2 = np.zeros((80, 80), np.int32)
    labels2[10:60, 10:60] = 2  # a 500 m clearing ...
    labels2[20:24, 20:24] = labels2[30:34, 40:44] = 0  # ... with two ponds dug into it
    width, length = classify.strip_width_m(labels, RES)
    assert width[1] <= 30 and length[1] >= 200
    width, length = classify.strip_width_m(labels2, RES)
    assert width[2] > 100


def _clearings(rows: dict):
    defaults = {
        "bare_share": 1.0,
        "green_share": 0.0,
        "area_m2": 8000.0,
        "elongation": 1.3,
        "months_seen": 40,
        "road": False,
    }
    table = pd.DataFrame([{**defaults, **r} for r in rows.values()]).assign(name=list(rows))
    return gpd.GeoDataFrame(table, geometry=[box(i * 1000, 0, i * 1000 + 80, 100) for i in range(len(rows))], crs=32647)


def test_road_cuts_and_river_gravel_do_not_make_sites_or_confirm_ponds():
    rows = {
        "hillside mine": {"mean_slope_deg": 18.0, "bsi_mean": 0.19},
        "laterite terrace": {"mean_slope_deg": 2.0, "bsi_mean": 0.19},  # levelled pad beside ponds
        "gold working": {"mean_slope_deg": 1.0, "bsi_mean": 0.11},  # grey gravel on the valley floor
        "road cut": {"mean_slope_deg": 20.0, "bsi_mean": 0.2, "road": True, "elongation": 6.0},
    }
    out = classify.select_clearings(_clearings(rows), ClearingRules()).set_index("name")
    assert out["persistent"].to_dict() == {
        "hillside mine": True,
        "laterite terrace": False,
        "gold working": False,
        "road cut": False,
    }
    assert out["pond_ground"].to_dict() == {
        "hillside mine": True,
        "laterite terrace": True,
        "gold working": False,
        "road cut": False,
    }


def _ponds(rows: dict):
    g = gpd.GeoDataFrame(
        {"name": list(rows), **{c: [r[c] for r in rows.values()] for c in next(iter(rows.values()))}},
        geometry=[r["geometry"] for r in rows.values()],
        crs=32647,
    )
    return g.drop(columns="geometry").set_geometry(g.geometry)


def test_river_pieces_fish_ponds_and_gold_working_pools_are_not_leach_ponds():
    clearings = gpd.GeoDataFrame(
        {"pond_ground": [True, False]}, geometry=[box(0, 0, 100, 100), box(5000, 0, 5100, 100)], crs=32647
    )
    base = {"area_m2": 400.0, "months_seen": 40, "river": 0.0, "setting_slope_deg": 15.0}
    rows = {
        "beside a mine": {**base, "geometry": box(110, 0, 130, 20)},
        "river piece beside a mine": {**base, "river": 1.0, "geometry": box(110, 50, 130, 70)},
        "lone on a hillside": {**base, "geometry": box(2000, 0, 2020, 20)},
        "fish pond": {**base, "setting_slope_deg": 1.5, "geometry": box(3000, 0, 3040, 40)},
        "pool in a gold working": {**base, "setting_slope_deg": 1.0, "geometry": box(5050, 50, 5070, 70)},
    }
    out = classify.select_ponds(_ponds(rows), clearings, PondRules())
    assert out["name"].tolist() == ["beside a mine", "lone on a hillside"]
    # without a DEM the setting is unknown: the lone rule cannot use it
    no_dem = _ponds(rows).assign(setting_slope_deg=np.nan)
    assert "fish pond" in classify.select_ponds(no_dem, clearings, PondRules())["name"].tolist()


def test_the_ground_around_a_pond_is_its_setting():
    slope = np.zeros((40, 40), np.float32)
    slope[:, 20:] = 25.0  # the valley floor west, a hillside east
    setting = classify.surrounding_slope(slope, RES, 50.0)
    assert setting[20, 5] == 0.0 and setting[20, 35] == 25.0
    assert 5.0 < setting[20, 21] < 20.0  # a pond at the hillside's foot sees both
    assert np.isnan(classify.surrounding_slope(np.full((5, 5), np.nan), RES, 50.0)).all()


def test_pool_clusters_of_the_real_belt_stay_under_the_network_length():
    # the reason for network_min_length_m: the 2,497 mapped pools, joined at up to 100 m, span < 300 m
    from importlib import resources

    import shapely

    from pipeline.vectorize import link_sites

    pools = pd.read_csv(resources.files("pipeline") / "data" / "pang_war_pools.csv")
    pts = gpd.GeoSeries.from_wkt(pools["geom"], crs=32647)
    labels = link_sites(pts, 100.0)
    spans = [
        shapely.minimum_bounding_radius(shapely.multipoints(shapely.get_coordinates(pts[labels == k].values))) * 2
        for k in np.unique(labels)
    ]
    assert max(spans) < 300.0 < PondRules().network_min_length_m


def test_water_on_the_flat_floor_beside_a_river_is_its_floodplain():
    river = np.zeros((60, 60), bool)
    river[30, :] = True
    setting = np.full(river.shape, 1.0, np.float32)
    setting[:, 40:] = 20.0  # a hillside comes down to the river in the east
    plain = classify.floodplain(river, setting, RES, 100.0, 7.0)
    assert plain[22, 10] and plain[38, 10]  # bar pools 80 m off the channel, on the flat
    assert not plain[5, 10]  # 250 m away
    assert not plain[25, 50]  # a hillside pond near the river is not floodplain
    assert not classify.floodplain(np.zeros_like(river), setting, RES, 100.0, 7.0).any()


def test_lone_water_lined_up_over_half_a_kilometre_is_a_river_not_mines():
    base = {"area_m2": 200.0, "months_seen": 60, "river": 0.0, "setting_slope_deg": 12.0}
    chain = {f"piece {i}": {**base, "geometry": box(60 * i, 0, 60 * i + 20, 10)} for i in range(10)}  # 560 m
    pools = {f"pool {i}": {**base, "geometry": box(5000 + 25 * i, 0, 5000 + 25 * i + 15, 15)} for i in range(6)}
    out = classify.select_ponds(_ponds({**chain, **pools}), gpd.GeoDataFrame(geometry=[], crs=32647), PondRules())
    assert out["name"].tolist() == list(pools)
    # beside a clearing, the same pieces are judged by the clearing, not the chain
    clearing = gpd.GeoDataFrame({"pond_ground": [True]}, geometry=[box(0, 20, 600, 120)], crs=32647)
    assert len(classify.select_ponds(_ponds(chain), clearing, PondRules())) == 10
