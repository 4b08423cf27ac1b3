"""Harder simulated scenarios (issue 4): each changes what it says and leaves the standard landscape alone."""

import json
from datetime import date
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from pipeline.aoi import utm_crs
from pipeline.errors import ConfigError
from pipeline.lab.simulate import (
    RELATIVE_ORBIT,
    SCENARIOS,
    SECOND_ORBIT,
    SITE_LINK_M,
    build_landscape,
    choose_window,
    load_pools,
    simulate,
)
from tests.support import run_checker

SMALL = dict(size_km=1.5, start_year=2023, end_year=2024)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenarios")
    return {name: simulate(root / name, 3, scenario=name, **SMALL) for name in ("standard", "all")}


def _params(sim):
    return json.loads(json.loads(sim.catalog.read_text())["simulation"])


def test_standard_records_no_scenario_and_a_harder_one_records_its_changes(sims):
    assert "scenario" not in _params(sims["standard"])
    assert _params(sims["all"])["scenario"] == {
        k: v for k, v in SCENARIOS["all"].__dict__.items() if v != getattr(SCENARIOS["standard"], k)
    }


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
    roads = conf[conf["kind"] == "road"]
    # villages beside mines have their road to the mine ("all" also holds valley villages, away from them)
    villages = conf[(conf["kind"] == "village") & (conf.geometry.distance(roads.union_all()) < 1.0)]
    assert len(villages) >= 1 and (roads["area_m2"] > 0).all()
    assert villages.geometry.distance(clearings.union_all()).min() >= 39.0
    assert villages.geometry.distance(clearings.union_all()).max() <= 400.0
    assert set(gpd.read_file(sims["standard"].truth, layer="confounders")["kind"]) <= {
        "swidden",
        "landslide",
        "paddy",
        "river",
    }


def test_unknown_scenario_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate(tmp_path / "x", 3, scenario="monsoon", **SMALL)


# ------------------------------------------------------------------------------------ two orbits

ONE_YEAR = dict(size_km=1.0, start_year=2023, end_year=2023)


@pytest.fixture(scope="module")
def orbits(tmp_path_factory):
    root = tmp_path_factory.mktemp("orbits")
    return {name: simulate(root / name, 3, scenario=name, **ONE_YEAR) for name in ("standard", "two_orbits")}


def _items(sim):
    cat = pystac.Catalog.from_file(str(sim.catalog))
    return sorted(
        (i for i in cat.get_items(recursive=True) if i.collection_id == "sentinel-2-l2a"), key=lambda i: i.datetime
    )


def test_two_orbits_add_a_second_track_three_days_on_with_its_swath_edge_in_the_aoi(orbits):
    standard, both = _items(orbits["standard"]), _items(orbits["two_orbits"])
    second = [i for i in both if i.properties["sat:relative_orbit"] == SECOND_ORBIT]
    assert len(both) == len(standard) + len(second) and len(second) >= len(standard) - 1
    assert len({i.id for i in both}) == len(both)  # one scene a day: ids and solar days stay unique
    first_dates = {i.datetime.date() for i in standard}
    for item in second:
        assert date.fromordinal(item.datetime.date().toordinal() - 3) in first_dates
        with rasterio.open(item.assets["scl"].get_absolute_href()) as src:
            scl = src.read(1)
        with rasterio.open(item.assets["red"].get_absolute_href()) as src:
            red = src.read(1)
        # the swath edge crosses the image: its east part is nodata (SCL 0, DN 0), the west part is not
        assert 0.2 < (scl == 0).mean() < 0.6 and (red == 0).mean() == pytest.approx((scl == 0).mean(), abs=0.02)
        assert (scl[:, -1] == 0).all() and (scl[:, 0] != 0).all()
    # the footprint is the part of the image the swath covers
    (full,) = {round(shape(i.geometry).area, 12) for i in standard}
    assert shape(second[0].geometry).area / full == pytest.approx(1 - (scl == 0).mean(), abs=0.02)
    # seen 10 minutes later in the morning: the sun is a little higher and further south
    after = {i.datetime.date(): i for i in standard}
    jan = next(i for i in second if i.datetime.month == 1)
    before = after[date.fromordinal(jan.datetime.date().toordinal() - 3)]
    assert jan.properties["view:sun_elevation"] > before.properties["view:sun_elevation"] + 0.5
    assert jan.properties["view:sun_azimuth"] > before.properties["view:sun_azimuth"] + 1.0


def test_two_orbits_catalog_meets_contract_3_and_keeps_the_first_orbit_unchanged(orbits):
    done = run_checker("check_catalog.py", orbits["two_orbits"].catalog)
    assert done.returncode == 0, done.stdout + done.stderr
    # the second orbit draws from a stream of its own: R104's scenes are the standard's, byte for byte
    first = [i for i in _items(orbits["two_orbits"]) if i.properties["sat:relative_orbit"] == RELATIVE_ORBIT]
    assert [i.id for i in first] == [i.id for i in _items(orbits["standard"])]
    for a, b in zip(first, _items(orbits["standard"])):
        for band in ("red", "scl"):
            assert (
                Path(a.assets[band].get_absolute_href()).read_bytes()
                == Path(b.assets[band].get_absolute_href()).read_bytes()
            ), (a.id, band)


# ----------------------------------------------- dense belts, heavy confounders, terrain (truth only)


@cache
def _landscape(seed: int, name: str):
    """The landscape and truth of a 4 km window over 2020-2024 (no scenes rendered: under a second)."""
    pools = load_pools()
    window = choose_window(pools, seed, 4000.0)
    lon, lat = Transformer.from_crs(pools.crs, 4326, always_xy=True).transform(
        (window[0] + window[2]) / 2, (window[1] + window[3]) / 2
    )
    crs = utm_crs(lon, lat)
    land, truth, _, _ = build_landscape(
        seed, window, crs, date(2020, 1, 1), date(2024, 12, 31), pools.to_crs(crs), SCENARIOS[name]
    )
    return land, truth


def _site_gaps(truth) -> np.ndarray:
    """Each truth site's distance to the nearest other site (its ponds and clearing)."""
    feet = [
        shapely.union_all(
            [
                *truth.ponds.geometry[truth.ponds["site_id"] == s],
                *truth.clearings.geometry[truth.clearings["site_id"] == s],
            ]
        )
        for s in truth.sites["site_id"]
    ]
    return np.array([min(f.distance(g) for j, g in enumerate(feet) if j != i) for i, f in enumerate(feet)])


def test_dense_belt_keeps_sites_apart_closer_than_the_pipeline_links():
    standard, dense = _landscape(100, "standard")[1], _landscape(100, "dense")[1]
    assert _site_gaps(standard).min() > SITE_LINK_M  # the standard truth is unambiguous at 200 m
    gaps = _site_gaps(dense)
    assert len(dense.sites) > len(standard.sites)  # the same pools, linked at 120 m: more, smaller sites
    assert (gaps < SITE_LINK_M).sum() >= 10 and gaps.min() >= SCENARIOS["dense"].site_link_m - 1.0


@pytest.mark.parametrize("kind", ["swidden", "landslide"])
def test_heavy_confounders_have_several_times_the_area_and_leave_the_mines_alone(kind):
    def area(name):
        return sum(
            t.confounders.loc[t.confounders["kind"] == kind, "area_m2"].sum()
            for t in (_landscape(seed, name)[1] for seed in (100, 102))
        )

    assert area(f"{kind}_heavy") > 3.0 * area("standard")
    standard, heavy = _landscape(100, "standard")[1], _landscape(100, f"{kind}_heavy")[1]
    for layer in ("ponds", "clearings", "sites"):  # confounders draw from streams of their own
        assert getattr(heavy, layer).equals(getattr(standard, layer)), layer


def test_steep_terrain_has_more_winter_shadow_and_flat_terrain_almost_none():
    def shadowed(name):  # the share of the image SCL calls dark (class 2) near the winter solstice
        return float((_landscape(100, name)[0].illumination(355.0) < 0.3).mean())

    def slope(name):
        land = _landscape(100, name)[0]
        return float(np.median(np.degrees(np.arctan(np.hypot(land.dz_dx, land.dz_dy)))))

    assert shadowed("steep") > 2 * shadowed("standard") > 0.06
    assert shadowed("flat") < 0.01
    assert slope("flat") < slope("standard") < slope("steep")


def test_the_cli_help_names_every_scenario():
    import re

    from pipeline.cli import SCENARIO_HELP
    from pipeline.lab.simulate import SCENARIOS

    named = set(re.findall(r"[a-z_]+", SCENARIO_HELP.split(":", 1)[1])) - {"or"}
    assert named == set(SCENARIOS) - {"standard"}
