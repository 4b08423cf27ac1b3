"""Scoring a run against truth: small hand-built geometries in EPSG:32647 with known answers."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.errors import PipelineError
from pipeline.lab.evaluate import evaluate, format_scores
from pipeline.vectorize import link_sites

UTM = "EPSG:32647"
X0, Y0 = 600_000.0, 2_860_000.0  # near Chipwe, Kachin State (UTM 47N)
YEARS = (2019, 2020, 2021, 2022)


def sq(x: float, y: float, size: float = 30.0) -> shapely.Polygon:
    """A square of side ``size`` m centred ``(x, y)`` m from the test origin."""
    h = size / 2
    return shapely.box(X0 + x - h, Y0 + y - h, X0 + x + h, Y0 + y + h)


def rect(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(features, **extra) -> gpd.GeoDataFrame:
    """GeoDataFrame in UTM from ``[(geometry, first_year), ...]``."""
    geoms = [g for g, _ in features]
    data = {"first_year": np.array([fy for _, fy in features], dtype=int), **extra}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=UTM), crs=UTM)


def write_run(path, ponds=(), clearings=(), sites=None, summary=None, linkage_m=200.0, years=YEARS):
    """A minimal contract-4 run dir. ``sites`` defaults to linked clusters of the predictions."""
    path.mkdir(parents=True, exist_ok=True)
    p = frame(ponds)
    p.insert(0, "pond_id", np.arange(len(p)))
    p["area_m2"], p["site_id"] = p.area, -1
    c = frame(clearings)
    c.insert(0, "clearing_id", np.arange(len(c)))
    c["area_m2"], c["mean_slope_deg"], c["site_id"] = c.area, 25.0, -1
    if sites is None:
        both = pd.concat([p[["first_year", "geometry"]], c[["first_year", "geometry"]]], ignore_index=True)
        labels = link_sites(gpd.GeoSeries(both.geometry.values, crs=UTM), linkage_m)
        sites = [
            (
                shapely.convex_hull(shapely.union_all(both.geometry.values[labels == k])),
                int(both["first_year"].to_numpy()[labels == k].min()),
            )
            for k in np.unique(labels)
        ]
    s = frame(sites)
    s.insert(0, "site_id", np.arange(len(s)))
    s["last_year"] = max(years)
    s["n_ponds"], s["pond_area_m2"], s["cleared_area_m2"], s["footprint_m2"] = 0, 0.0, 0.0, s.area
    gpkg = path / "footprints.gpkg"
    for name, gdf in (("ponds", p), ("clearings", c), ("sites", s)):
        gdf.to_file(gpkg, layer=name)
    if summary is None:
        fy = s["first_year"].to_numpy()
        summary = {y: ((fy <= y).sum(), 0.0) for y in years}
    rows = [
        {
            "aoi": "test",
            "year": y,
            "sites_new": 0,
            "sites_total": n,
            "ponds_new": 0,
            "ponds_total": 0,
            "pond_area_m2": 0.0,
            "cleared_area_new_m2": 0.0,
            "footprint_total_m2": a,
            "valid_observations": 9,
            "provisional": y == max(years),
        }
        for y, (n, a) in summary.items()
    ]
    pd.DataFrame(rows).to_csv(path / "yearly_summary.csv", index=False)
    config = {"sites": {"linkage_m": linkage_m}} if linkage_m is not None else {}
    (path / "run.json").write_text(json.dumps({"config": config, "code_version": "test"}))
    return path


def write_truth(path, ponds=(), clearings=(), confounders=None, crs=UTM, pond_extra=None):
    gpkg = path / "truth.gpkg"
    frame(ponds, **(pond_extra or {})).to_crs(crs).to_file(gpkg, layer="ponds")
    frame(clearings).to_crs(crs).to_file(gpkg, layer="clearings")
    if confounders is not None:
        kinds = [k for _, k in confounders]
        gpd.GeoDataFrame({"kind": kinds}, geometry=gpd.GeoSeries([g for g, _ in confounders], crs=UTM), crs=UTM).to_crs(
            crs
        ).to_file(gpkg, layer="confounders")
    return gpkg


# ------------------------------------------------------------------------------------------------- ponds


def test_pond_precision_recall_f1(tmp_path):
    truth = write_truth(tmp_path, ponds=[(sq(0, 0), 2019), (sq(1000, 0), 2019), (sq(2000, 0), 2019)])
    run = write_run(tmp_path / "run", ponds=[(sq(5, 5), 2019), (sq(1000, -8, 20), 2019), (sq(5000, 0), 2019)])
    p = evaluate(run, truth)["ponds"]
    assert (p["n_truth"], p["n_pred"], p["n_found"], p["n_pred_correct"]) == (3, 3, 2, 2)
    assert p["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert p["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert p["f1"] == pytest.approx(2 / 3, abs=1e-4)
    # 30 m squares are 900 m2 >= 300 m2, so every truth pond is detectable
    assert p["n_truth_detectable"] == 3 and p["detectable_recall"] == pytest.approx(2 / 3, abs=1e-4)


def test_one_detected_pond_over_two_adjacent_pools_finds_both(tmp_path):
    # two pools 10 m apart merge at 10 m resolution: a one-to-one matcher would report recall 1/2
    truth = write_truth(tmp_path, ponds=[(rect(0, 0, 30, 30), 2020), (rect(40, 0, 70, 30), 2020)])
    run = write_run(tmp_path / "run", ponds=[(rect(0, 0, 70, 30), 2020)])
    p = evaluate(run, truth)["ponds"]
    assert (p["precision"], p["recall"], p["f1"]) == (1.0, 1.0, 1.0)
    assert p["first_year_n"] == 2


def test_one_pixel_pond_matches_by_centroid_within_20_m(tmp_path):
    # truth: a 1-pixel pond (10 m square). Pred A's centroid is 17 m from its edge (no overlap): found.
    # Pred B's centroid is 25 m from the edge of another 1-pixel truth pond: neither found nor correct.
    truth = write_truth(tmp_path, ponds=[(sq(0, 0, 10), 2020), (sq(500, 0, 10), 2020)])
    run = write_run(tmp_path / "run", ponds=[(sq(22, 0, 10), 2020), (sq(530, 0, 10), 2020)])
    p = evaluate(run, truth)["ponds"]
    assert (p["n_found"], p["n_pred_correct"]) == (1, 1)
    assert p["precision"] == 0.5 and p["recall"] == 0.5
    # 100 m2 is under the 300 m2 detectability floor: no detectable truth, so detectable recall is undefined
    assert p["n_truth_detectable"] == 0 and p["detectable_recall"] is None
    assert p["detectable_precision"] == p["precision"]
    # a tighter distance loses the centroid match
    p10 = evaluate(run, truth, match_distance_m=10.0)["ponds"]
    assert (p10["n_found"], p10["precision"], p10["recall"], p10["f1"]) == (0, 0.0, 0.0, 0.0)


def test_detectable_column_overrides_area(tmp_path):
    # the large pond is flagged not detectable (covered by tarpaulin), the small one flagged detectable
    truth = write_truth(
        tmp_path,
        ponds=[(sq(0, 0, 40), 2020), (sq(1000, 0, 10), 2020), (sq(2000, 0, 40), 2020)],
        pond_extra={"detectable": [False, True, True]},
    )
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0, 30), 2020), (sq(2000, 0, 30), 2020)])
    p = evaluate(run, truth)["ponds"]
    assert p["n_truth_detectable"] == 2
    assert p["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert p["detectable_recall"] == 0.5  # the small detectable one was missed
    assert p["detectable_precision"] == 1.0  # a hit on a non-detectable real pond is still correct


def test_first_year_exact_and_within_one(tmp_path):
    truth = write_truth(
        tmp_path, ponds=[(sq(0, 0), 2019), (sq(1000, 0), 2020), (sq(2000, 0), 2020), (sq(3000, 0), 2020)]
    )
    run = write_run(
        tmp_path / "run",
        ponds=[
            (sq(0, 0), 2019),  # exact
            (sq(1000, 0), 2021),  # one late
            (sq(2000, 0), 2022),  # two late
            # truth 4 is overlapped by a big pond dated right and a sliver dated wrong: the big one counts
            (rect(2985, -15, 3012, 15), 2020),
            (rect(3012, -15, 3020, 15), 2022),
        ],
    )
    p = evaluate(run, truth)["ponds"]
    assert p["first_year_n"] == 4
    assert p["first_year_exact"] == 0.5
    assert p["first_year_within_1"] == 0.75
    assert p["first_year_mean_error"] == 0.75  # (0 + 1 + 2 + 0) / 4: the run dates late on average


def test_first_year_before_period_is_clipped_and_after_is_dropped(tmp_path):
    # mapped as begun in 2016, but the run starts in 2019: the best a run can say is 2019
    truth = write_truth(tmp_path, ponds=[(sq(0, 0), 2016), (sq(1000, 0), 2024)])
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0), 2019)])
    s = evaluate(run, truth)
    assert s["ponds"]["n_truth"] == 1  # 2024 is after the run's last year (2022)
    assert s["ponds"]["first_year_exact"] == 1.0
    assert s["sites"]["first_year_exact"] == 1.0
    assert s["inputs"]["truth_ponds_clipped_to_first_year"] == 1
    assert s["inputs"]["truth_ponds_dropped_after_last_year"] == 1
    assert s["yearly"]["years"][0]["truth_sites_total"] == 1  # present from the first year on


# --------------------------------------------------------------------------------------------- clearings


def test_clearing_objects_and_area_scores(tmp_path):
    truth = write_truth(tmp_path, clearings=[(rect(0, 0, 100, 100), 2020), (rect(1000, 0, 1100, 100), 2020)])
    run = write_run(tmp_path / "run", clearings=[(rect(50, 0, 150, 100), 2020)])
    c = evaluate(run, truth)["clearings"]
    assert (c["precision"], c["recall"]) == (1.0, 0.5)
    assert c["f1"] == pytest.approx(2 / 3, abs=1e-4)
    # overlap 5,000 m2; union 25,000 m2 (truth 20,000 + 5,000 predicted outside)
    assert c["area_overlap_m2"] == 5000.0
    assert c["area_iou"] == 0.2
    assert c["area_precision"] == 0.5 and c["area_recall"] == 0.25


# ------------------------------------------------------------------------------------------------- sites


def test_truth_sites_follow_linkage_distance(tmp_path):
    # two truth ponds whose edges are 150 m apart: one site at 200 m linkage, two at 100 m
    truth = write_truth(tmp_path, ponds=[(rect(0, 0, 30, 30), 2021), (rect(180, 0, 210, 30), 2019)])
    ponds = [(rect(0, 0, 30, 30), 2021), (rect(180, 0, 210, 30), 2019)]
    one_site = [(rect(0, 0, 210, 30), 2019)]
    run200 = write_run(tmp_path / "r200", ponds=ponds, sites=one_site, linkage_m=200.0)
    s = evaluate(run200, truth)["sites"]
    assert (s["n_truth"], s["n_pred"], s["f1"]) == (1, 1, 1.0)
    assert s["first_year_exact"] == 1.0  # truth site dates from its earliest member, 2019
    assert (s["n_truth_split"], s["n_truth_merged"]) == (0, 0)

    # linkage taken from run.json when not given
    run100 = write_run(tmp_path / "r100", ponds=ponds, sites=one_site, linkage_m=100.0)
    s = evaluate(run100, truth)["sites"]
    assert s["n_truth"] == 2
    assert (s["precision"], s["recall"]) == (1.0, 1.0)
    assert (s["n_truth_merged"], s["n_pred_merging"]) == (2, 1)
    # the run's single site is dated 2019: right for the 2019 truth site, two years early for the 2021 one
    assert s["first_year_exact"] == 0.5 and s["first_year_within_1"] == 0.5

    # an explicit linkage wins over run.json; no linkage in run.json means 200 m
    assert evaluate(run100, truth, linkage_m=200.0)["sites"]["n_truth"] == 1
    run_default = write_run(tmp_path / "rdef", ponds=ponds, sites=one_site, linkage_m=None)
    s = evaluate(run_default, truth)
    assert s["sites"]["n_truth"] == 1 and s["inputs"]["linkage_m"] == 200.0


def test_site_split_and_buffered_match(tmp_path):
    # truth: pond + clearing 20 m apart form one site. Run: two sites, one per feature (a split).
    # A run site 15 m from a truth site's hull still matches (both buffered by 10 m); one 30 m away does not.
    truth = write_truth(
        tmp_path,
        ponds=[(rect(0, 0, 30, 30), 2020), (rect(3000, 0, 3030, 30), 2020)],
        clearings=[(rect(50, 0, 150, 100), 2020)],
    )
    sites = [
        (rect(0, 0, 30, 30), 2020),
        (rect(50, 0, 150, 100), 2020),
        (rect(3045, 0, 3075, 30), 2020),
        (rect(6000, 0, 6030, 30), 2020),
    ]
    run = write_run(tmp_path / "run", sites=sites)
    s = evaluate(run, truth)["sites"]
    assert (s["n_truth"], s["n_pred"]) == (2, 4)
    assert s["precision"] == 0.75 and s["recall"] == 1.0
    assert s["n_truth_split"] == 1
    near_miss = write_run(tmp_path / "run2", sites=[(rect(3060, 0, 3090, 30), 2020)])
    assert evaluate(near_miss, truth)["sites"]["n_found"] == 0


# ------------------------------------------------------------------------------------------------ yearly


def test_yearly_site_count_and_footprint_errors(tmp_path):
    truth = write_truth(
        tmp_path,
        # site A (2019): a 100x100 clearing holding a pond, which adds nothing to the footprint (union, not sum)
        ponds=[(rect(20, 20, 50, 50), 2019), (rect(2000, 0, 2030, 30), 2019), (rect(4000, 0, 4030, 30), 2021)],
        clearings=[(rect(0, 0, 100, 100), 2019)],
    )
    summary = {2019: (2, 12_180.0), 2020: (3, 10_900.0), 2021: (3, 11_800.0), 2022: (3, 11_800.0)}
    run = write_run(tmp_path / "run", summary=summary)
    y = evaluate(run, truth)["yearly"]
    truth_sites = [r["truth_sites_total"] for r in y["years"]]
    assert truth_sites == [2, 2, 3, 3]
    assert [r["rel_error_sites"] for r in y["years"]] == [0.0, 0.5, 0.0, 0.0]
    assert [r["truth_footprint_m2"] for r in y["years"]] == [10_900.0, 10_900.0, 11_800.0, 11_800.0]
    assert y["years"][0]["rel_error_footprint"] == pytest.approx(0.1174, abs=1e-4)
    assert y["max_abs_rel_error_sites"] == 0.5
    assert y["mean_abs_rel_error_sites"] == 0.125
    assert y["max_abs_rel_error_footprint"] == pytest.approx(0.1174, abs=1e-4)
    assert y["years"][-1]["provisional"] is True


# ------------------------------------------------------------------------------------------- confounders


def test_confounder_fraction(tmp_path):
    confounders = [
        (rect(0, 0, 100, 100), "swidden"),
        (rect(0, 0, 100, 100), "Swidden"),  # duplicate: counted once
        (rect(1000, 0, 1100, 100), "landslide"),
        (rect(2000, 0, 2100, 100), "paddy"),
    ]
    truth = write_truth(tmp_path, ponds=[(sq(5000, 0), 2020)], confounders=confounders)
    run = write_run(tmp_path / "run", ponds=[(rect(2000, 0, 2020, 100), 2020)], clearings=[(rect(0, 0, 50, 100), 2020)])
    s = evaluate(run, truth)
    c = s["confounders"]
    assert c["swidden"]["fraction"] == 0.5 and c["swidden"]["area_m2"] == 10_000.0
    assert c["landslide"]["fraction"] == 0.0
    assert c["all"]["fraction"] == 0.25  # 5,000 of 20,000 m2 of swidden + landslide
    assert c["paddy"]["fraction"] == 0.2  # a pond on a paddy counts against ponds+clearings
    assert c["river"]["n"] == 0 and c["river"]["fraction"] is None
    assert s["summary"]["confounder_fraction_as_clearing"] == 0.25


def test_valley_confounders_are_scored_where_the_truth_has_them(tmp_path):
    confounders = [
        (rect(0, 0, 100, 100), "stream"),
        (rect(1000, 0, 1100, 100), "fish_pond"),
        (rect(2000, 0, 2100, 100), "gold_working"),
        (rect(3000, 0, 3100, 100), "road_cut"),
        (rect(4000, 0, 4100, 100), "plantation"),
        (rect(6000, 0, 6100, 100), "swidden"),
    ]
    truth = write_truth(tmp_path, ponds=[(sq(9000, 0), 2020)], confounders=confounders)
    run = write_run(
        tmp_path / "run",
        ponds=[(rect(1000, 0, 1050, 100), 2020), (rect(3000, 0, 3050, 100), 2020)],
        clearings=[(rect(2000, 0, 2100, 25), 2020), (rect(4000, 0, 4100, 50), 2020)],
    )
    c = evaluate(run, truth)["confounders"]
    # water, and bare ground holding water, against ponds and clearings
    assert c["fish_pond"]["fraction"] == 0.5 and c["fish_pond"]["compared_with"] == "ponds+clearings"
    assert c["gold_working"]["fraction"] == 0.25 and c["stream"]["fraction"] == 0.0
    # bare ground against clearings, as swidden: a pond on a road cut is not a clearing there
    assert c["road_cut"]["fraction"] == 0.0 and c["road_cut"]["compared_with"] == "clearings"
    assert c["plantation"]["fraction"] == 0.5
    assert "village" not in c and c["all"]["n"] == 1  # the headline stays swidden + landslide


def test_no_confounder_layer_gives_null(tmp_path):
    truth = write_truth(tmp_path, ponds=[(sq(0, 0), 2020)])
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0), 2020)])
    s = evaluate(run, truth)
    assert s["confounders"] is None and s["summary"]["confounder_fraction_as_clearing"] is None


# ------------------------------------------------------------------------------------ truth forms and CRS


def _scenario(tmp_path):
    ponds = [(sq(0, 0), 2018), (sq(60, 0), 2020), (sq(1000, 0, 10), 2021), (sq(3000, 0), 2022)]
    clearings = [(rect(100, 0, 300, 150), 2019), (rect(5000, 0, 5200, 200), 2021)]
    run = write_run(
        tmp_path / "run",
        ponds=[(sq(0, 0), 2019), (sq(1018, 0, 10), 2021), (sq(8000, 0), 2020)],
        clearings=[(rect(120, 0, 300, 150), 2020), (rect(5100, 100, 5300, 300), 2021)],
    )
    return ponds, clearings, run


def test_truth_in_wgs84_scores_like_utm(tmp_path):
    ponds, clearings, run = _scenario(tmp_path)
    (tmp_path / "utm").mkdir()
    (tmp_path / "wgs").mkdir()
    utm = evaluate(run, write_truth(tmp_path / "utm", ponds, clearings))
    wgs = evaluate(run, write_truth(tmp_path / "wgs", ponds, clearings, crs="EPSG:4326"))
    assert utm["ponds"]["n_found"] == 2 and utm["ponds"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    for section in ("summary", "ponds", "sites"):
        assert wgs[section] == pytest.approx(utm[section], abs=1e-3), section
    assert wgs["clearings"]["area_iou"] == pytest.approx(utm["clearings"]["area_iou"], abs=1e-4)
    assert wgs["inputs"]["crs"] == "EPSG:32647"


def test_geojson_truth_forms(tmp_path):
    ponds, clearings, run = _scenario(tmp_path)
    (tmp_path / "gpkg").mkdir()
    ref = evaluate(run, write_truth(tmp_path / "gpkg", ponds, clearings))

    p, c = frame(ponds).to_crs(4326), frame(clearings).to_crs(4326)
    single = tmp_path / "truth.geojson"
    pd.concat([p.assign(layer="ponds"), c.assign(layer="clearings")], ignore_index=True).to_file(single)
    folder = tmp_path / "truth_dir"
    folder.mkdir()
    p.to_file(folder / "ponds.geojson")
    c.to_file(folder / "clearings.geojson")
    for truth in (single, folder):
        got = evaluate(run, truth)
        for section in ("summary", "ponds", "clearings", "sites"):
            assert got[section] == pytest.approx(ref[section], abs=1e-3), (truth, section)


# --------------------------------------------------------------------------------------- errors and empties


def test_missing_truth_layer_raises_clear_error(tmp_path):
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0), 2020)])
    gpkg = tmp_path / "labels.gpkg"
    frame([(sq(0, 0), 2020)]).to_file(gpkg, layer="ponds")
    with pytest.raises(PipelineError, match=r"labels\.gpkg has no layer 'clearings'") as e:
        evaluate(run, gpkg)
    assert "\n" not in str(e.value) and "first_year" in str(e.value)


def test_missing_first_year_and_layer_column_raise(tmp_path):
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0), 2020)])
    gpkg = tmp_path / "t.gpkg"
    frame([(sq(0, 0), 2020)]).to_file(gpkg, layer="ponds")
    frame([(sq(0, 0), 2020)]).rename(columns={"first_year": "year"}).to_file(gpkg, layer="clearings")
    with pytest.raises(PipelineError, match=r"layer 'clearings' has no first_year column"):
        evaluate(run, gpkg)
    flat = tmp_path / "flat.geojson"
    frame([(sq(0, 0), 2020)]).to_file(flat)
    with pytest.raises(PipelineError, match=r"flat\.geojson .*no 'layer' column"):
        evaluate(run, flat)
    with pytest.raises(PipelineError, match=r"nowhere\.gpkg does not exist"):
        evaluate(run, tmp_path / "nowhere.gpkg")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(PipelineError, match=r"has no ponds\.geojson"):
        evaluate(run, tmp_path / "empty_dir")


def test_empty_predictions_and_empty_truth_do_not_crash(tmp_path):
    truth = write_truth(tmp_path, ponds=[(sq(0, 0), 2020)], clearings=[(rect(100, 0, 200, 100), 2020)])
    empty_run = write_run(tmp_path / "empty", summary={y: (0, 0.0) for y in YEARS})
    s = evaluate(empty_run, truth)
    # nothing predicted: precision undefined (null), recall 0, F1 0
    assert (s["ponds"]["precision"], s["ponds"]["recall"], s["ponds"]["f1"]) == (None, 0.0, 0.0)
    assert s["clearings"]["area_iou"] == 0.0 and s["clearings"]["area_precision"] is None
    assert s["sites"]["n_truth"] == 1 and s["summary"]["site_f1"] == 0.0
    assert s["yearly"]["years"][1]["rel_error_sites"] == -1.0

    (tmp_path / "none").mkdir()
    no_truth = write_truth(tmp_path / "none")
    run = write_run(tmp_path / "run", ponds=[(sq(0, 0), 2020)])
    s = evaluate(run, no_truth)
    assert (s["ponds"]["precision"], s["ponds"]["recall"], s["ponds"]["f1"]) == (0.0, None, 0.0)
    assert s["yearly"]["years"][0]["rel_error_sites"] == 0.0  # 0 truth vs 0 run in 2019
    assert s["yearly"]["years"][1]["rel_error_sites"] is None  # 0 truth vs 1 run: undefined
    json.dumps(s)  # plain JSON types throughout
    s = evaluate(empty_run, no_truth)
    assert s["summary"]["site_f1"] is None


def test_scores_are_json_and_format(tmp_path):
    ponds, clearings, run = _scenario(tmp_path)
    (tmp_path / "t").mkdir()
    truth = write_truth(tmp_path / "t", ponds, clearings, confounders=[(rect(-500, -500, -400, -400), "swidden")])
    s = evaluate(run, truth)
    assert json.loads(json.dumps(s)) == s
    text = format_scores(s)
    assert "ponds detectable" in text
    assert any(line.startswith("2022") and line.endswith("(provisional)") for line in text.splitlines())
    assert "swidden 0.000" in text
