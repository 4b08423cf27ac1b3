"""Every configured rare-earth belt: its AOI file says where its outline comes from, and its config
loads and plans (``run --dry-run``) against a STAC API on loopback, so no belt is first tried in a real run."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pystac
import pytest
import shapely
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from pipeline.aoi import load_aoi
from pipeline.cli import app
from pipeline.lab.simulate import simulate
from tests.stac_api_double import StacApiDouble
from tests.support import REPO

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.stem != "demo")
BELTS = shapely.box(97.0, 21.0, 101.0, 26.5)  # the Kachin and northern Shan belts


def test_at_least_four_belts_are_configured():
    assert len(CONFIGS) >= 4, [p.stem for p in CONFIGS]
    assert {p.stem for p in CONFIGS} <= {p.stem for p in (REPO / "aois").glob("*.geojson")}


@pytest.mark.parametrize("path", sorted((REPO / "aois").glob("*.geojson")), ids=lambda p: p.stem)
def test_an_aoi_file_records_its_source_and_how_approximate_it_is(path):
    props = json.loads(path.read_text())["features"][0]["properties"]
    assert props["name"] == path.stem
    assert props["source"].strip() and props["region"].strip()
    assert isinstance(props["approximate"], bool)
    if props["approximate"]:
        assert props["note"].strip(), "an approximate outline says how approximate in its note"
    aoi = load_aoi(path)
    assert aoi.crs.to_epsg() == 32647  # every known belt lies in UTM 47N
    assert BELTS.contains(aoi.geometry)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The loopback API with one real-size Sentinel-2 item whose footprint covers every belt."""
    sim = simulate(tmp_path_factory.mktemp("sim"), seed=3, size_km=1, start_year=2022, end_year=2022, revisit_days=90)
    first = next(pystac.read_file(str(sim.catalog)).get_items(recursive=True))
    wide = first.clone()
    wide.id = "S2B_47QQA_20220115_0_L2A"
    wide.datetime = datetime(2022, 1, 15, 4, 0, tzinfo=timezone.utc)
    wide.properties.pop("s2:mgrs_tile", None)
    wide.geometry, wide.bbox = shapely.geometry.mapping(BELTS), list(BELTS.bounds)
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    double = StacApiDouble(sim.catalog, server.url_for("/").rstrip("/"), extra_items=[wide])
    server.expect_request(re.compile(".*")).respond_with_handler(double)
    double.url = server.url_for("/").rstrip("/")
    yield double
    server.stop()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_a_belt_plans_offline(config, api, tmp_path):
    res = CliRunner().invoke(
        app,
        ["run", "--config", str(config), "--dry-run", "--stac-url", api.url, "--out", str(tmp_path / "o")],
    )
    assert res.exit_code == 0, res.output
    area = load_aoi(REPO / "aois" / f"{config.stem}.geojson").area_km2
    assert f"dry run: {config.stem}, {round(area, 2)} km2" in res.output
    assert "S2B_47QQA_20220115_0_L2A" in res.output  # the search carried the belt's own geometry
    assert not (tmp_path / "o").exists()  # a plan writes nothing
