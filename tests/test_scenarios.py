"""Harder simulated scenarios (issue 4): each changes what it says and leaves the standard landscape alone."""
import json

import geopandas as gpd
import numpy as np
import pystac
import pytest

from pipeline.errors import ConfigError
from pipeline.simulate import SCENARIOS, simulate

SMALL = dict(size_km=1.5, start_year=2023, end_year=2024)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenarios")
    return {name: simulate(root / name, 3, scenario=name, **SMALL) for name in ("standard", "all")}


def _params(sim):
    return json.loads(json.loads(sim.catalog.read_text())["simulation"])


def test_standard_records_no_scenario_and_a_harder_one_records_its_changes(sims):
    assert "scenario" not in _params(sims["standard"])
    assert _params(sims["all"])["scenario"] == {k: v for k, v in SCENARIOS["all"].__dict__.items()
                                                 if v != getattr(SCENARIOS["standard"], k)}


def test_single_pixel_ponds_are_at_most_one_pixel(sims):
    ponds = gpd.read_file(sims["all"].truth, layer="ponds")
    assert len(ponds) and ponds["area_m2"].max() <= 100.0 + 1e-6
    assert not ponds["detectable"].any()  # under 300 m2: reported, never held against the sensor


def test_wet_years_are_cloudier(sims):
    def cover(sim):
        items = list(pystac.Catalog.from_file(str(sim.catalog)).get_items(recursive=True))
        return np.mean([i.properties["eo:cloud_cover"] for i in items if "eo:cloud_cover" in i.properties])
    assert cover(sims["all"]) > cover(sims["standard"]) + 10


def test_villages_and_roads_are_confounders_beside_the_mines_not_on_them(sims):
    conf = gpd.read_file(sims["all"].truth, layer="confounders")
    clearings = gpd.read_file(sims["all"].truth, layer="clearings")
    villages = conf[conf["kind"] == "village"]
    assert len(villages) >= 1 and (conf[conf["kind"] == "road"]["area_m2"] > 0).all()
    assert villages.geometry.distance(clearings.union_all()).min() >= 39.0
    assert villages.geometry.distance(clearings.union_all()).max() <= 400.0
    assert set(gpd.read_file(sims["standard"].truth, layer="confounders")["kind"]) <= {"swidden", "landslide", "paddy", "river"}


def test_unknown_scenario_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate(tmp_path / "x", 3, scenario="monsoon", **SMALL)
