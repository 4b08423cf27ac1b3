"""The whole pipeline on a tiny hand-built catalog whose answer is known exactly."""

import json

import geopandas as gpd
import pandas as pd
import pytest

from pipeline.run import run
from tests.support import catalog_config, run_checker


@pytest.fixture
def tiny_run(tiny_catalog):
    f = tiny_catalog
    cfg = catalog_config(f)
    return run(cfg), f["root"] / "run"


def test_tiny_run_meets_output_contract(tiny_run):
    _, out = tiny_run
    check = run_checker("check_run.py", out)
    assert check.returncode == 0, check.stdout + check.stderr


def test_tiny_run_finds_the_pond_and_clearing_with_their_years(tiny_run):
    result, out = tiny_run
    ponds = gpd.read_file(out / "footprints.gpkg", layer="ponds")
    clearings = gpd.read_file(out / "footprints.gpkg", layer="clearings")
    sites = gpd.read_file(out / "footprints.gpkg", layer="sites")
    assert ponds.crs.to_epsg() == 32647
    # a 40 m x 40 m pond dug in November 2022 belongs to 2022, not the next year
    assert len(ponds) == 1 and ponds["first_year"].iloc[0] == 2022
    assert ponds["area_m2"].iloc[0] == pytest.approx(1600.0)
    # the clearing (300 m x 400 m less the pond) was cut in March 2022, on a ~17 degree slope; grown by
    # one pixel into open ground it takes in the pond's outer ring of 12 pixels (a mapped clearing
    # includes the ponds dug into it), and no forest
    assert len(clearings) == 1 and clearings["first_year"].iloc[0] == 2022
    assert clearings["area_m2"].iloc[0] == pytest.approx(120000 - 1600 + 1200)
    assert clearings["mean_slope_deg"].iloc[0] == pytest.approx(16.7, abs=1.0)
    assert len(sites) == 1 and sites["n_ponds"].iloc[0] == 1
    assert sites["footprint_m2"].iloc[0] == pytest.approx(120000)
    table = pd.read_csv(out / "yearly_summary.csv")
    assert table["sites_total"].tolist() == [0, 1, 1]
    assert table["valid_observations"].tolist() == [12, 12, 12]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["n_scenes_used"] == 36
    assert {"footprints.gpkg", "yearly_summary.csv", "first_year.tif", "class.tif", "valid_observations.tif"} <= set(
        manifest["outputs"]
    )
    # evidence: one clear view a month; the pond from November 2022 to the end, the clearing from March 2022
    # (MNDWI of pure milky water (0.16 - 0.015) / 0.175 = 0.83, but the 20 m SWIR resampled to 10 m mixes the
    # 40 m pond with its laterite bank, so its pixels read well above the -0.2 threshold and below that;
    # BSI of laterite 0.18 / 0.84 = 0.21)
    pond, clearing, site = ponds.iloc[0], clearings.iloc[0], sites.iloc[0]
    assert (pond["first_seen"], pond["last_seen"], pond["n_clear_obs"]) == ("2022-11", "2023-12", 14)
    assert 0.1 < pond["mndwi_mean"] < 0.83 and pond["water_share"] == pytest.approx(1.0)
    assert (clearing["first_seen"], clearing["n_clear_obs"]) == ("2022-03", 22)
    assert clearing["bsi_mean"] == pytest.approx(0.214, abs=0.01)
    assert 0.9 < pond["confidence"] <= 1 and 0.9 < clearing["confidence"] <= 1
    assert site["confidence"] >= max(pond["confidence"], clearing["confidence"])
    assert (site["first_seen"], site["last_seen"]) == ("2022-03", "2023-12")
