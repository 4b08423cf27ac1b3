"""The online STAC sources against a STAC API served on loopback from a simulated catalog.

No mocks of our own functions: pystac-client, rasterio and requests talk HTTP to a real server.
"""

from __future__ import annotations

import json
import re

import pystac
import pytest
import rasterio
from pytest_httpserver import HTTPServer

from pipeline.config import DownloadConfig, load_config
from pipeline.lab.simulate import simulate
from pipeline.run import run
from tests.stac_api_double import StacApiDouble
from tests.support import REPO


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), seed=1, size_km=1, start_year=2022, end_year=2022, revisit_days=30)


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
    o = {
        "aoi": sim.aoi,
        "period.start": sim.start.isoformat(),
        "period.end": sim.end.isoformat(),
        "out": out,
        "compute.workers": 2,
        "download.backoff_s": 0.01,
        "download.retries": 3,
    }
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
    cfg = config(
        sim,
        tmp_path / "es",
        **{"source.kind": "earth-search", "source.stac_url": api.url, "cache.dir": tmp_path / "cache"},
    )
    es = run(cfg)
    same_outputs(local.out, es.out)
    fetch = es.manifest["fetch"]
    assert fetch["scenes_new"] == len(local.manifest["scenes_used"]) + 1  # + the DEM tile
    assert fetch["http_bytes"] > 0 and fetch["scenes_failed"] == 0
    assert sorted(es.manifest["scenes_used"]) == sorted(local.manifest["scenes_used"])
    assert api.requests_for("/search")  # the API was searched, the files read with range requests
    gets = [r for r in api.requests_for("/files/") if r[0] == "GET"]  # (GDAL asks the size with a HEAD)
    assert gets and all(r[2] and r[2].startswith("bytes=") for r in gets)

    again = run(
        config(
            sim,
            tmp_path / "es2",
            **{"source.kind": "earth-search", "source.stac_url": api.url, "cache.dir": tmp_path / "cache"},
        )
    )
    assert again.manifest["fetch"]["http_bytes"] == 0 and again.manifest["fetch"]["scenes_new"] == 0
    same_outputs(local.out, again.out)

    offline = run(
        config(
            sim,
            tmp_path / "off",
            **{
                "source.kind": "earth-search",
                "source.stac_url": "http://127.0.0.1:9",
                "cache.dir": tmp_path / "cache",
                "cache.offline": True,
            },
        )
    )
    same_outputs(local.out, offline.out)


def test_search_pages_through_next_links(sim, api):
    from pipeline.aoi import load_aoi
    from pipeline.sources.stac_api import StacApiSource

    aoi = load_aoi(sim.aoi)
    src = StacApiSource("earth-search", api.url, page_size=3)
    found = src.search(aoi.geometry, sim.start, sim.end, 100)
    assert len(found.scenes) == len([d for d in api.items if d["collection"] == "sentinel-2-l2a"]) > 3
    assert len(found.dem) == 1
    pages = len(api.requests_for("/search"))
    assert pages == -(-len(found.scenes) // 3) + 1  # scene pages + the DEM search
    assert len({it.id for it in found.scenes}) == len(found.scenes)


def test_planetary_computer_layout_gives_the_same_outputs(sim, api, tmp_path):
    local = run(config(sim, tmp_path / "local", **{"source.kind": "local", "source.catalog": sim.catalog}))
    pc_api = StacApiDouble(sim.catalog, api.url, flavour="planetary-computer")
    api.__dict__.update({k: v for k, v in pc_api.__dict__.items() if k in ("items", "flavour")})
    assert "B04" in api.items[-1]["assets"] or "B04" in api.items[0]["assets"]
    pc = run(
        config(
            sim,
            tmp_path / "pc",
            **{"source.kind": "planetary-computer", "source.stac_url": api.url, "cache.dir": tmp_path / "cache"},
        )
    )
    same_outputs(local.out, pc.out)


def test_retries_after_429_503_and_a_dropped_connection(sim, api, tmp_path):
    from pipeline.aoi import load_aoi
    from pipeline.sources.cache import SceneCache
    from pipeline.sources.http import Http
    from pipeline.sources.stac_api import StacApiSource

    aoi = load_aoi(sim.aoi)
    found = StacApiSource("earth-search", api.url).search(aoi.geometry, sim.start, sim.end, 100)
    first = found.scenes[0]
    red = "/files/" + first.assets["red"].href.split("/files/", 1)[1]
    nir = "/files/" + first.assets["nir"].href.split("/files/", 1)[1]
    api.faults = {red: ["429", "503"], nir: ["drop"]}
    http = Http(DownloadConfig(timeout_s=10, retries=3, backoff_s=0.01))
    cache = SceneCache(tmp_path / "cache", aoi.grid)
    report = cache.fetch(found, ["red", "nir", "scl"], http, concurrency=2)
    assert report.failed == [] and len(report.new) == len(found.scenes) + 1
    assert [m for m, _, _ in api.requests_for(red)][:3] == ["HEAD"] * 3  # 429, 503, then the answer
    gets = [r for m, _, r in api.requests_for(nir) if m == "GET"]
    cut, rest = (tuple(map(int, r.removeprefix("bytes=").split("-"))) for r in gets[:2])
    assert cut[0] < rest[0] <= cut[1] == rest[1]  # the rest of the body that was cut short, asked for again
    # the same pixels as a clip of the file itself; nothing partial left behind by the dropped connection
    local = next(pystac.read_file(str(sim.catalog)).get_items(first.id, recursive=True))
    for band in ("red", "nir"):
        again = cache.clip(local.assets[band].get_absolute_href(), tmp_path / f"{band}.tif")
        with rasterio.open(tmp_path / f"{band}.tif") as a, rasterio.open(cache.item_dir(first) / f"{band}.tif") as b:
            assert again["shape"] == [b.height, b.width] and (a.read() == b.read()).all()
    assert not list(cache.dir.rglob(".*partial*"))


def test_a_scene_that_keeps_failing_is_skipped_and_fetched_on_the_next_run(sim, api, tmp_path):
    from pipeline.aoi import load_aoi
    from pipeline.sources.stac_api import StacApiSource

    aoi = load_aoi(sim.aoi)
    found = StacApiSource("earth-search", api.url).search(aoi.geometry, sim.start, sim.end, 100)
    bad = found.scenes[3]
    path = "/files/" + bad.assets["swir16"].href.split("/files/", 1)[1]
    api.faults = {path: ["503"] * 20}
    cfg = config(
        sim,
        tmp_path / "es",
        **{
            "source.kind": "earth-search",
            "source.stac_url": api.url,
            "cache.dir": tmp_path / "cache",
            "download.retries": 2,
        },
    )
    first = run(cfg)
    assert bad.id not in first.manifest["scenes_used"]
    skipped = {s["id"]: s["reason"] for s in first.manifest["scenes_skipped"]}
    assert "503" in skipped[bad.id] and "failed after 3 tries" in skipped[bad.id]
    assert not list((tmp_path / "cache").rglob(f"{bad.id}/item.json"))  # half a scene is never in the catalog
    catalog = next((tmp_path / "cache").rglob("catalog.json")).read_text()
    assert bad.id not in catalog
    api.faults = {}
    second = run(cfg)
    assert second.manifest["fetch"]["new"] == [bad.id]
    assert bad.id in second.manifest["scenes_used"]


def test_corrupt_and_partial_entries_are_fetched_again(sim, api, tmp_path):
    cfg = config(
        sim,
        tmp_path / "es",
        **{"source.kind": "earth-search", "source.stac_url": api.url, "cache.dir": tmp_path / "cache"},
    )
    first = run(cfg)
    tifs = sorted((tmp_path / "cache").rglob("sentinel-2-l2a/*/red.tif"))
    truncated, flipped, unrecorded = tifs[0], tifs[1], tifs[2]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(flipped.read_bytes())
    data[-10] ^= 0xFF
    flipped.write_bytes(bytes(data))
    (unrecorded.parent / "red.tif.json").unlink()  # as if killed between the data and its record
    second = run(cfg)
    repaired = " ".join(second.manifest["fetch"]["entries_repaired"])
    assert "truncated" in repaired and "checksum" in repaired and "interrupted" in repaired
    assert second.manifest["fetch"]["scenes_new"] == 3
    same_outputs(first.out, second.out)


def test_killed_fetch_leaves_a_consistent_cache_and_the_cli_run_completes(sim, api, tmp_path):
    """The acceptance path, by the command line: a fetch killed mid-download, then
    `python -m pipeline run --source earth-search --stac-url URL` gives the local run's outputs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = REPO
    cache = tmp_path / "cache"
    common = ["--aoi", str(sim.aoi), "--start", sim.start.isoformat(), "--end", sim.end.isoformat()]
    api.file_delay_s = 0.03
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fetch",
            "--source",
            "earth-search",
            "--stac-url",
            api.url,
            "--cache-dir",
            str(cache),
            "-q",
            *common,
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.rglob("*.tif.json"))) < 8:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_records = len(list(cache.rglob("*.tif.json")))
    assert n_records >= 8
    for item_json in cache.rglob("item.json"):  # every scene that says it is complete is
        for a in json.loads(item_json.read_text())["assets"]:
            assert (item_json.parent / f"{a}.tif.json").is_file()
    api.file_delay_s = 0.0

    local = run(config(sim, tmp_path / "local", **{"source.kind": "local", "source.catalog": sim.catalog}))
    api.log.clear()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--source",
            "earth-search",
            "--stac-url",
            api.url,
            "--cache-dir",
            str(cache),
            "--out",
            str(tmp_path / "es"),
            "-q",
            *common,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    same_outputs(local.out, tmp_path / "es")
    manifest = json.loads((tmp_path / "es" / "run.json").read_text())
    total = len(manifest["scenes_used"]) + 1
    assert manifest["fetch"]["scenes_failed"] == 0
    assert manifest["fetch"]["scenes_new"] + manifest["fetch"]["scenes_cached"] == total
    assert not list(cache.rglob(".*partial*"))  # the killed fetch's temporary files are gone
    refetched = {p for _, p, _ in api.requests_for("/files/")}
    assert len(refetched) == 6 * (total - 1) + 1 - n_records  # what the killed fetch finished was kept


def test_a_catalog_made_elsewhere_gives_the_same_outputs_through_the_api(tiny_catalog, tmp_path):
    """conftest's catalog (plain tiled GTiff, proj:code, DEM in lon/lat, no orbit): not our simulator."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        url = server.url_for("/").rstrip("/")
        server.expect_request(re.compile(".*")).respond_with_handler(StacApiDouble(tiny_catalog["catalog"], url))
        base = {
            "aoi": tiny_catalog["aoi"],
            "period.start": "2021-01-01",
            "period.end": "2023-12-31",
            "compute.workers": 2,
        }
        local = run(
            load_config(
                None, {**base, "out": tmp_path / "l", "source.kind": "local", "source.catalog": tiny_catalog["catalog"]}
            )
        )
        es = run(
            load_config(
                None,
                {
                    **base,
                    "out": tmp_path / "e",
                    "source.kind": "earth-search",
                    "source.stac_url": url,
                    "cache.dir": tmp_path / "cache",
                },
            )
        )
        same_outputs(local.out, es.out)
        assert len(local.manifest["scenes_used"]) == len(es.manifest["scenes_used"]) == 36
    finally:
        server.stop()
