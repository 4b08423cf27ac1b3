"""The check against real labels (``python -m pipeline reference``): pool recall known exactly on run dirs
built from a simulated AOI's truth (the simulator puts its ponds on the real pools), the scoring rules at
their distances, an AOI without labels, one-line errors for bad label files, and the command end to end
on a simulated run, which stays valid for ``verify`` and check_run."""

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import mapping

from pipeline import export, reference
from pipeline.vectorize import link_sites
from tests.support import run_checker

UTM = 32647


# --- run dirs built from the truth ----------------------------------------------------------------


def _derived_sites(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Sites as the pipeline makes them: features linked at 200 m, the site polygon their convex hull."""
    feats = pd.concat([ponds[["first_year", "geometry"]], clearings[["first_year", "geometry"]]], ignore_index=True)
    feats = gpd.GeoDataFrame(feats, geometry="geometry", crs=ponds.crs)
    label = link_sites(feats.geometry, 200.0) if len(feats) else np.zeros(0, int)
    groups = [feats[label == k] for k in range(int(label.max()) + 1 if len(label) else 0)]
    return gpd.GeoDataFrame(
        {"site_id": np.arange(1, len(groups) + 1), "first_year": [int(g["first_year"].min()) for g in groups]},
        geometry=[shapely.union_all(g.geometry.values).convex_hull for g in groups],
        crs=ponds.crs,
    )


def _run_dir(root: Path, aoi_wgs84, ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, years=(2021, 2023)) -> Path:
    """The parts of a run dir the check reads: run.json (AOI, grid CRS, period) and footprints.gpkg."""
    root.mkdir(parents=True)
    layers = {
        "sites": _derived_sites(ponds, clearings),
        "ponds": ponds[["first_year", "geometry"]],
        "clearings": clearings[["first_year", "geometry"]],
    }
    for name, gdf in layers.items():
        gdf.to_file(root / export.GPKG, layer=name, driver="GPKG", engine="pyogrio")
    (root / export.MANIFEST).write_text(
        json.dumps(
            {
                "aoi": root.name,
                "aoi_geometry": mapping(aoi_wgs84),
                "grid": {"crs": f"EPSG:{UTM}"},
                "config": {"period": {"start": f"{years[0]}-01-01", "end": f"{years[1]}-12-31"}},
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def truth(simulated_run):
    sim = simulated_run[0]
    aoi = gpd.read_file(sim.aoi).geometry.iloc[0]
    ponds = gpd.read_file(sim.truth, layer="ponds").to_crs(UTM)
    clearings = gpd.read_file(sim.truth, layer="clearings").to_crs(UTM)
    return aoi, ponds, clearings


@pytest.fixture(scope="module")
def real_pools_in_aoi(truth):
    """The mapped pools inside the simulated AOI, read here without the module's reader."""
    aoi, _, _ = truth
    df = pd.read_csv(reference.LABELS_DIR / reference.POOLS)
    pts = gpd.GeoSeries(shapely.points(df["x"], df["y"]), crs=4326)
    return pts[pts.within(aoi)].to_crs(UTM).reset_index(drop=True)


def test_the_truth_itself_finds_every_real_pool(truth, real_pools_in_aoi, tmp_path):
    aoi, ponds, clearings = truth
    # the premise: the simulator's ponds sit on the real pools of its window, one each
    centroids = ponds.geometry.centroid
    assert len(ponds) == len(real_pools_in_aoi) > 20
    assert all(centroids.distance(p).min() < 0.01 for p in real_pools_in_aoi)
    result = reference.check_run(_run_dir(tmp_path / "truth", aoi, ponds, clearings))
    p = result["pools"]
    assert p["n"] == len(real_pools_in_aoi)
    assert p["recall_by_pond"] == p["recall_by_site"] == p["cluster_recall"] == 1.0
    n_clusters = int(link_sites(real_pools_in_aoi, 200.0).max()) + 1
    assert p["n_clusters"] == n_clusters


def test_without_half_the_sites_recall_is_the_share_kept(truth, real_pools_in_aoi, tmp_path):
    aoi, ponds, clearings = truth
    # whole truth sites go: they lie more than 200 m apart, so no kept pond is within 20 m of a dropped pool
    # and a pool cluster (200 m linkage of the points) is kept or dropped whole
    kept = ponds["site_id"] % 2 == 0
    result = reference.check_run(
        _run_dir(tmp_path / "half", aoi, ponds[kept], clearings[clearings["site_id"] % 2 == 0])
    )
    p = result["pools"]
    assert p["found_by_pond"] == kept.sum() and 0.2 < kept.mean() < 0.8
    assert p["recall_by_pond"] == round(kept.sum() / len(real_pools_in_aoi), 4)
    # clusters: computed here from the pools the kept ponds stand on
    all_clusters = link_sites(real_pools_in_aoi, 200.0)
    on_kept = np.array([ponds[kept].geometry.centroid.distance(q).min() < 0.01 for q in real_pools_in_aoi])
    assert p["clusters_found"] == len(np.unique(all_clusters[on_kept])) < p["n_clusters"]
    # by site: a dropped pool may still fall inside a kept site's hull; counted by brute force
    hulls = shapely.union_all(_derived_sites(ponds[kept], clearings[clearings["site_id"] % 2 == 0]).geometry.values)
    assert p["found_by_site"] == sum(hulls.distance(q) <= 20.0 for q in real_pools_in_aoi)


# --- the rules at their distances -----------------------------------------------------------------


def _gs(geoms):
    return gpd.GeoSeries(geoms, crs=UTM)


def test_pools_match_within_20_m_of_a_pond_and_clusters_by_site():
    pond = _gs([shapely.box(0, 0, 10, 10)])
    site = _gs([shapely.box(-5, -5, 500, 15)])
    # 19.9 and 20.1 m beside the pond; a pool 300 m east inside the site; a lone pool 1 km away
    pools = _gs(shapely.points([[29.9, 5], [5, 30.1], [300, 5], [1000, 1000]]))
    p = reference.pool_recall(pools, pond, site)
    assert (p["found_by_pond"], p["found_by_site"]) == (1, 3)
    # clusters at 200 m: the first two pools (35 m apart), the one 270 m east, the lone one; the first two
    # found by the site, the lone one not
    assert p["n_clusters"] == 3 and p["clusters_found"] == 2 and p["cluster_recall"] == round(2 / 3, 4)


def test_mine_points_inside_a_site_or_within_100_m_of_a_feature():
    features = _gs([shapely.box(0, 0, 10, 10)])
    sites = _gs([shapely.box(500, 0, 600, 100)])
    pts = _gs(shapely.points([[109.9, 5], [110.1, 5], [550, 50], [700, 50]]))
    assert reference.flagged_as_mine(pts, sites, features).tolist() == [True, False, True, False]


def test_river_points_near_a_pond_or_inside_a_site_not_near_a_clearing():
    ponds = _gs([shapely.box(0, 0, 10, 10)])
    sites = _gs([shapely.box(500, 0, 600, 100)])
    pts = _gs(shapely.points([[29, 5], [31, 5], [550, 50], [620, 50]]))
    assert reference.flagged_river(pts, ponds, sites).tolist() == [True, False, True, False]


def test_footprint_agreement_both_ways():
    # a 100 m square footprint half inside one 200 m patch; a second patch holds nothing of the run
    features = _gs([shapely.box(150, 0, 250, 100)])
    patches = _gs([shapely.box(0, 0, 200, 200), shapely.box(1000, 0, 1200, 200)])
    a = reference.footprint_agreement(features, patches)
    assert a["footprint_share_in_detections"] == 0.5 and a["detection_share_with_feature"] == 0.5
    assert (a["patches"], a["patches_with_feature"], a["footprint_km2"], a["detection_km2"]) == (2, 1, 0.01, 0.08)


def test_detections_use_features_first_seen_by_their_year_and_skip_runs_that_miss_it():
    ponds = gpd.GeoDataFrame(
        {"first_year": [2021, 2024]}, geometry=[shapely.box(0, 0, 10, 10), shapely.box(300, 0, 310, 10)], crs=UTM
    )
    clearings = gpd.GeoDataFrame({"first_year": []}, geometry=[], crs=UTM)
    sites = _derived_sites(ponds, clearings)
    patch = _gs([shapely.box(-50, -50, 350, 50)])
    empty = _gs([])
    labels = reference.Labels(empty, empty, empty, empty, {"2022": patch, "2024-25": patch})
    d = reference.score(labels, ponds, clearings, sites, [2020, 2024])["detections"]
    assert d["2022"]["features_first_year_up_to"] == 2022 and d["2022"]["footprint_km2"] == 0.0001
    assert d["2024-25"]["features_first_year_up_to"] == 2024 and d["2024-25"]["footprint_km2"] == 0.0002
    later = reference.score(labels, ponds, clearings, sites, [2023, 2024])["detections"]
    assert later["2022"]["comparable"] is False and later["2024-25"]["comparable"] is True


# --- no labels, bad labels ------------------------------------------------------------------------


def _far_away_run(root: Path) -> Path:
    """A run dir over Nhkawng Pa (97.5 E, 24.5 N, also UTM 47N), where none of the labels lie."""
    empty = gpd.GeoDataFrame({"first_year": []}, geometry=[], crs=UTM)
    return _run_dir(root, shapely.box(97.50, 24.50, 97.52, 24.52), empty, empty)


def test_an_aoi_without_labels_scores_nothing(tmp_path):
    result = reference.check_run(_far_away_run(tmp_path / "far"))
    assert not reference.has_labels(result) and result["pools"] is None
    assert reference.summary_lines(result) == [reference.nothing_line(result)]
    assert "no real labels fall inside the AOI" in reference.to_markdown(result)


def _copy_labels(dst: Path) -> Path:
    dst.mkdir()
    for name in reference.LABEL_FILES:
        shutil.copy(reference.LABELS_DIR / name, dst / name)
    return dst


POINT_FC = '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": %s}]}'
BAD_LABELS = [
    (reference.POOLS, None, ["does not exist"]),
    (reference.POOLS, "", ["is empty"]),
    (reference.POOLS, "x,y,type\n", ["has no pools"]),
    (reference.POOLS, "lon,lat\n98.3,25.7\n", ["lacks column(s) x, y"]),
    (reference.POOLS, "x,y\n433111.67,2839356.09\n", ["outside lon/lat ranges", "EPSG:4326"]),
    (reference.POOLS, "x,y\n25.67,98.33\n", ["look swapped"]),
    (reference.POOLS, b"x,y\n\xff\xfe\x00garbage\n", ["cannot be read as CSV"]),
    (reference.MINES, "not json at all", ["not valid JSON"]),
    (reference.MINES, '{"a": 1}', ["not GeoJSON"]),
    (reference.MINES, '{"type": "FeatureCollection", "features": []}', ["has no features"]),
    (
        reference.NON_MINES,
        POINT_FC % '{"type": "Point", "coordinates": [433111.6, 2839356.0]}',
        ["outside lon/lat ranges", "EPSG:4326"],
    ),
    (
        reference.RIVERS,
        POINT_FC.replace(
            '"features"', '"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32647"}}, "features"'
        )
        % '{"type": "Point", "coordinates": [433111.6, 2839356.0]}',
        ["declares CRS", "EPSG:4326"],
    ),
    (
        reference.MINES,
        POINT_FC % '{"type": "Polygon", "coordinates": [[[98.3, 25.7], [98.31, 25.7], [98.31, 25.71], [98.3, 25.7]]]}',
        ["Polygon", "not points"],
    ),
    (
        reference.DETECTIONS[0].file,
        POINT_FC % '{"type": "Point", "coordinates": [98.3, 25.7]}',
        ["Point", "not polygons"],
    ),
    (reference.DETECTIONS[1].file, POINT_FC % "null", ["without a geometry"]),
]


SHORT = {
    reference.POOLS: "pools",
    reference.MINES: "mines",
    reference.NON_MINES: "non_mines",
    reference.RIVERS: "rivers",
    **{d.file: f"detections_{d.name}" for d in reference.DETECTIONS},
}


@pytest.mark.parametrize("name,content,words", BAD_LABELS, ids=[f"{SHORT[n]}: {w[0]}" for n, _, w in BAD_LABELS])
def test_bad_label_files_are_one_line_errors_naming_the_file(cli, tmp_path, name, content, words):
    run = _far_away_run(tmp_path / "run")  # bad labels fail even where the AOI holds none
    labels = _copy_labels(tmp_path / "labels")
    bad = labels / name
    if content is None:
        bad.unlink()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    before = sorted(p.name for p in run.iterdir())
    code, out, err = cli("reference", "--run", run, "--labels", labels)
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for w in [str(bad), *words]:
        assert w in lines[0], lines[0]
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


def test_a_missing_labels_folder(cli, tmp_path):
    code, _, err = cli("reference", "--run", _far_away_run(tmp_path / "run"), "--labels", tmp_path / "nope")
    assert code == 2 and "labels folder" in err and str(tmp_path / "nope") in err


# --- the command end to end -----------------------------------------------------------------------


@pytest.fixture
def run_copy(simulated_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(simulated_run[1].out, copy)
    return copy


def test_command_writes_the_check_and_the_run_stays_valid(cli, run_copy, simulated_run):
    sim = simulated_run[0]
    code, out, err = cli("reference", "--run", run_copy)
    assert code == 0, err
    assert out.startswith("real labels inside the AOI") and "mapped pools, by pond" in out
    result = json.loads((run_copy / export.REFERENCE_JSON).read_text())
    # the pools inside a simulated AOI are the truth's pond centroids: recall by pond computed from them
    pools = gpd.read_file(sim.truth, layer="ponds").to_crs(UTM).geometry.centroid
    predicted = shapely.union_all(export.read_layers(run_copy)["ponds"].to_crs(UTM).geometry.values)
    expected = sum(predicted.distance(q) <= 20.0 for q in pools) / len(pools)
    assert result["pools"]["n"] == len(pools) and result["pools"]["recall_by_pond"] == round(expected, 4)
    assert result["simulated"] is True
    assert "| mapped pools, by pond |" in (run_copy / export.REFERENCE_MD).read_text()
    page = (run_copy / "report.html").read_text()
    assert "Check against real labels" in page and "mapped pools, by pond" in page
    manifest = export.read_manifest(run_copy)
    assert {export.REFERENCE_JSON, export.REFERENCE_MD} <= set(manifest["outputs"])
    assert cli("verify", "--run", run_copy)[0] == 0
    assert run_checker("check_run.py", run_copy).returncode == 0
    # a later report refresh keeps the section and the listing; a second check replaces the first
    assert cli("report", "--run", run_copy, "-q")[0] == 0
    assert "Check against real labels" in (run_copy / "report.html").read_text()
    assert cli("reference", "--run", run_copy, "-q") == (0, "", "")
    assert cli("verify", "--run", run_copy)[0] == 0
    assert not [p for p in run_copy.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_command_on_an_aoi_without_labels_says_so_in_one_line(cli, run_copy):
    manifest = json.loads((run_copy / export.MANIFEST).read_text())
    # run.json is not among the checksummed outputs: the run's AOI moved to Nhkawng Pa, where no label lies
    manifest["aoi_geometry"] = mapping(shapely.box(97.50, 24.50, 97.52, 24.52))
    (run_copy / export.MANIFEST).write_text(json.dumps(manifest))
    code, out, err = cli("reference", "--run", run_copy)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 and out.startswith("no real labels fall inside the AOI")
    assert json.loads((run_copy / export.REFERENCE_JSON).read_text())["pools"] is None
    assert "no real labels fall inside the AOI" in (run_copy / export.REFERENCE_MD).read_text()
    assert "no real labels fall inside the AOI" in (run_copy / "report.html").read_text()
    assert cli("verify", "--run", run_copy)[0] == 0
