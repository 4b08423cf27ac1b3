"""Polygons of known area, site linkage, and the real Pang War pools."""

from importlib import resources

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.aoi import area_m2, snapped_grid
from pipeline.vectorize import assign_sites, feature_table, grow_labels, label_features, link_sites, polygonize

CRS = 32647


def test_real_pools_cluster_into_283_sites_at_200m():
    # the published "almost 300 locations" (Global Witness 2022) from 2,497 mapped pools
    csv = resources.files("pipeline") / "data" / "pang_war_pools.csv"
    pools = pd.read_csv(csv)
    pts = gpd.GeoSeries.from_wkt(pools["geom"], crs=CRS)
    assert len(pts) == 2497
    assert link_sites(pts, 200).max() + 1 == 283
    assert link_sites(pts, 150).max() + 1 == 318
    assert link_sites(pts, 300).max() + 1 == 210


def test_link_sites_uses_edge_distance_and_is_deterministic():
    g = gpd.GeoSeries([box(0, 0, 10, 10), box(150, 0, 160, 10), box(400, 0, 410, 10)], crs=CRS)
    assert link_sites(g, 200).tolist() == [0, 0, 1]
    assert link_sites(g, 100).tolist() == [0, 1, 2]


def test_a_pond_of_known_area_keeps_it_and_its_place():
    grid = snapped_grid((436000, 2841000, 436200, 2841200), CRS, 10.0)
    mask = np.zeros(grid.shape.yx, bool)
    mask[3:6, 4:8] = True  # 3 x 4 pixels = 1200 m2
    labels = label_features(mask)
    gdf = polygonize(labels, grid)
    assert len(gdf) == 1 and gdf.crs.to_epsg() == CRS
    assert area_m2(gdf).iloc[0] == pytest.approx(1200.0)
    assert gdf.total_bounds.tolist() == [436040.0, 2841140.0, 436080.0, 2841170.0]


def test_diagonal_pixels_are_separate_valid_polygons():
    grid = snapped_grid((0, 0, 100, 100), CRS, 10.0)
    mask = np.zeros(grid.shape.yx, bool)
    mask[2, 2] = mask[3, 3] = True
    gdf = polygonize(label_features(mask), grid)
    assert len(gdf) == 2 and gdf.is_valid.all() and (gdf.geom_type == "Polygon").all()


def test_clearings_grow_one_pixel_into_open_neighbours_only():
    labels = np.zeros((7, 9), np.int32)
    labels[2:5, 1:3] = 1  # a clearing, 3 x 2 px
    labels[2:5, 6:8] = 2  # another, 3 px to the east
    allowed = np.ones_like(labels, bool)
    allowed[:, 0] = False  # forest west of clearing 1: not open, never taken
    out = grow_labels(labels, allowed, steps=1)
    assert (out[2:5, 0] == 0).all()  # forest stays out
    assert (out[1, 1:3] == 1).all() and (out[5, 1:3] == 1).all() and (out[2:5, 3] == 1).all()
    assert out[1, 0] == 0 and out[1, 3] == 0  # corners are not 4-adjacent: a single polygon stays one
    assert (out[2:5, 5] == 2).all() and out[2, 4] == 0  # the column between them stays a gap after one step
    assert (out[labels > 0] == labels[labels > 0]).all()  # nothing already labelled changes
    two = grow_labels(labels, allowed, steps=2)
    assert two[2, 4] == 2  # both reach it in step 2: the larger label, every time
    assert (grow_labels(labels, allowed, steps=0) == labels).all()


def test_grown_outline_keeps_the_core_pixels_evidence():
    grid = snapped_grid((0, 0, 100, 100), CRS, 10.0)
    mask = np.zeros(grid.shape.yx, bool)
    mask[3:6, 3:6] = True
    labels = label_features(mask)
    first = np.where(mask, 2021, -1).astype(np.int16)  # grown edge pixels have no bare onset of their own
    grown = grow_labels(labels, np.ones(grid.shape.yx, bool), 1)
    t = feature_table(labels, grid, first, first, np.full(grid.shape.yx, 12, np.int16), grown=grown)
    assert t["area_m2"].tolist() == [(9 + 12) * 100.0] and t["core_area_m2"].tolist() == [900.0]
    assert t["first_year"].tolist() == [2021]  # not dragged down by the edge's -1
    assert len(polygonize(grown, grid)) == 1


def test_feature_year_is_the_median_of_its_pixels():
    grid = snapped_grid((0, 0, 100, 100), CRS, 10.0)
    mask = np.zeros(grid.shape.yx, bool)
    mask[1:4, 1:4] = True
    first = np.full(grid.shape.yx, 2021, np.int16)
    first[1, 1] = 2023  # one late edge pixel does not move the date
    t = feature_table(label_features(mask), grid, first, first, np.full(grid.shape.yx, 12, np.int16))
    assert t["first_year"].tolist() == [2021] and t["area_m2"].tolist() == [900.0]


def _layer(boxes, years, **cols):
    return gpd.GeoDataFrame(
        {"first_year": years, "last_year": years, "area_m2": [b.area for b in boxes], **cols}, geometry=boxes, crs=CRS
    )


def test_a_site_needs_ponds_or_a_persistent_clearing():
    ponds = _layer([box(0, 0, 20, 20)], [2021])
    clearings = _layer(
        [box(30, 0, 200, 100), box(2000, 0, 2200, 100), box(5000, 0, 5200, 100)],
        [2020, 2022, 2023],
        persistent=[False, True, False],
    )
    p, c, s = assign_sites(ponds, clearings, 200, 50)
    # pond + its clearing = site 1; the persistent clearing alone = site 2; the regrowing patch is dropped
    assert len(s) == 2 and c["site_id"].tolist() == [1, 2] and p["site_id"].tolist() == [1]
    assert s["first_year"].tolist() == [2020, 2022]
    assert s.loc[0, "footprint_m2"] == pytest.approx(400 + 170 * 100)
    assert s.loc[0, "n_ponds"] == 1 and s.loc[1, "n_ponds"] == 0


def test_a_provisional_clearing_anchors_a_provisional_site():
    ponds = _layer([box(0, 0, 20, 20)], [2021])
    clearings = _layer(
        [box(30, 0, 200, 100), box(2000, 0, 2200, 100), box(2210, 0, 2300, 100), box(5000, 0, 5200, 100)],
        [2020, 2024, 2024, 2024],
        persistent=[False, False, True, False],
        provisional=[False, True, False, False],
    )
    p, c, s = assign_sites(ponds, clearings, 200, 50)
    # the pond's site is sure; the young clearing with a persistent neighbour is sure; the lone young
    # clearing that is not provisional (it greened) is still dropped
    assert len(s) == 2 and s["provisional"].tolist() == [False, False]
    clearings.loc[2, "persistent"] = False
    p, c, s = assign_sites(ponds, clearings, 200, 50)
    assert len(s) == 2 and s["provisional"].tolist() == [False, True] and c["site_id"].tolist() == [1, 2, 2]


def test_the_footprint_to_each_year_counts_overlaps_once():
    # a clearing cut in 2021 and a pond dug into it in 2022 (half inside), one more clearing in 2024:
    # the union to each year's end, never the sum of areas, and a year without new polygons keeps its area
    from pipeline.summary import footprint_to_year

    ponds = gpd.GeoDataFrame({"first_year": [2022]}, geometry=[box(50, 50, 150, 150)], crs=CRS)
    clearings = gpd.GeoDataFrame(
        {"first_year": [2021, 2024]}, geometry=[box(0, 0, 100, 100), box(1000, 0, 1010, 10)], crs=CRS
    )
    areas = footprint_to_year(ponds, clearings, [2020, 2021, 2022, 2023, 2024])
    assert areas == {2020: 0.0, 2021: 10_000.0, 2022: 17_500.0, 2023: 17_500.0, 2024: 17_600.0}


def test_the_footprint_of_label_rasters_is_the_area_of_their_union():
    # what a run's layers are: ponds from one label raster, clearings (grown) from another, overlapping
    # each other here and there; their union's area to each year, as a union of every polygon gives it
    import shapely

    from pipeline.summary import footprint_to_year

    rng = np.random.default_rng(3)
    grid = snapped_grid((436000, 2841000, 436600, 2841600), CRS, 10.0)
    ponds, clearings = (
        feature_table(
            label_features(rng.random(grid.shape.yx) < share),
            grid,
            rng.choice([2021, 2022, 2023], grid.shape.yx).astype(np.int16),
            np.full(grid.shape.yx, 2023, np.int16),
            np.ones(grid.shape.yx, np.int16),
        )
        for share in (0.3, 0.45)
    )
    years = [2020, 2021, 2022, 2023]
    union = {
        y: shapely.union_all(
            np.concatenate(
                [
                    ponds.geometry.values[ponds["first_year"] <= y],
                    clearings.geometry.values[clearings["first_year"] <= y],
                ]
            )
        ).area
        for y in years
    }
    assert footprint_to_year(ponds, clearings, years) == union and union[2023] > 0
    assert footprint_to_year(ponds.iloc[:0], clearings, years) == {
        y: clearings.area[clearings["first_year"] <= y].sum() for y in years
    }
