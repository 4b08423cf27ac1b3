"""The online STAC sources against a STAC API served on loopback from a simulated catalog.

No mocks of our own functions: pystac-client, rasterio and requests talk HTTP to a real server.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
from pytest_httpserver import HTTPServer

from pipeline.config import load_config
from pipeline.run import run
from pipeline.simulate import simulate
from tests.stac_api_double import StacApiDouble


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), seed=1, size_km=1, start_year=2022, end_year=2022,
                    revisit_days=30)


@pytest.fixture
def api(sim):
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    double = StacApiDouble(sim.catalog, server.url_for("/").rstrip("/"))
    server.expect_request(re.compile(".*")).respond_with_handler(double)
    double.url = server.url_for("/").rstrip("/")
    yield double
    server.clear()
    if server.is_running():
        server.stop()


def config(sim, out, **over):
    o = {"aoi": sim.aoi, "period.start": sim.start.isoformat(), "period.end": sim.end.isoformat(), "out": out,
         "compute.workers": 2, "download.backoff_s": 0.01, "download.retries": 3}
    o.update(over)
    return load_config(None, o)


def same_outputs(a, b):
    import geopandas as gpd

    assert (a / "yearly_summary.csv").read_bytes() == (b / "yearly_summary.csv").read_bytes()
    for layer in ("ponds", "clearings", "sites"):
        ga, gb = gpd.read_file(a / "footprints.gpkg", layer=layer), gpd.read_file(b / "footprints.gpkg", layer=layer)
        assert len(ga) == len(gb), layer
        assert ga.drop(columns="geometry").equals(gb.drop(columns="geometry")), layer
        assert ga.geometry.geom_equals_exact(gb.geometry, 1e-6).all(), layer


def test_earth_search_run_matches_local_and_rerun_fetches_nothing(sim, api, tmp_path):
    local = run(config(sim, tmp_path / "local", **{"source.kind": "local", "source.catalog": sim.catalog}))
    cfg = config(sim, tmp_path / "es", **{"source.kind": "earth-search", "source.stac_url": api.url,
                                           "cache.dir": tmp_path / "cache"})
    es = run(cfg)
    same_outputs(local.out, es.out)
    fetch = es.manifest["fetch"]
    assert fetch["scenes_new"] == len(local.manifest["scenes_used"]) + 1  # + the DEM tile
    assert fetch["http_bytes"] > 0 and fetch["scenes_failed"] == 0
    assert sorted(es.manifest["scenes_used"]) == sorted(local.manifest["scenes_used"])
    assert api.requests_for("/search")  # the API was searched, the files read with range requests
    assert all(r[2] and r[2].startswith("bytes=") for r in api.requests_for("/files/"))

    again = run(config(sim, tmp_path / "es2", **{"source.kind": "earth-search", "source.stac_url": api.url,
                                                  "cache.dir": tmp_path / "cache"}))
    assert again.manifest["fetch"]["http_bytes"] == 0 and again.manifest["fetch"]["scenes_new"] == 0
    same_outputs(local.out, again.out)

    offline = run(config(sim, tmp_path / "off", **{"source.kind": "earth-search", "source.stac_url": "http://127.0.0.1:9",
                                                   "cache.dir": tmp_path / "cache", "cache.offline": True}))
    same_outputs(local.out, offline.out)
