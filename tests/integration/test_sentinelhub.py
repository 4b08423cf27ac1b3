"""The Sentinel Hub source against a loopback double of CDSE's token, Catalog and Process endpoints.

No mocks of our own functions: the source talks HTTP to a real server that renders GeoTIFFs from a
simulated contract-3 catalog.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time

import pytest
from pytest_httpserver import HTTPServer

from pipeline.config import DownloadConfig, load_config
from pipeline.errors import ConfigError, SourceError
from pipeline.lab.simulate import simulate
from pipeline.run import run
from pipeline.sources import sentinelhub as shmod
from tests.sentinelhub_double import SentinelHubDouble
from tests.support import REPO, run_checker

CLIENT_ID = "kachin-test-client"
SECRET = "s3cr3t-Zq8xWv-never-log-me"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), seed=1, size_km=1, start_year=2022, end_year=2022, revisit_days=30)


@pytest.fixture
def sh(sim, monkeypatch, tmp_path):
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    url = server.url_for("/").rstrip("/")
    double = SentinelHubDouble(sim.catalog, url, CLIENT_ID, SECRET)
    double.url = url
    double.token_url = url + "/auth/realms/CDSE/protocol/openid-connect/token"
    server.expect_request(re.compile(".*")).respond_with_handler(double)
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # never the developer's own profile
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the double's token endpoint is plain http
    yield double
    server.clear()
    if server.is_running():
        server.stop()


def sh_config(sim, sh, out, **over):
    o = {
        "aoi": sim.aoi,
        "period.start": sim.start.isoformat(),
        "period.end": sim.end.isoformat(),
        "out": out,
        "source.kind": "sentinelhub",
        "source.sh_base_url": sh.url,
        "source.sh_token_url": sh.token_url,
        "cache.dir": out.parent / "cache",
        "compute.workers": 2,
        "download.backoff_s": 0.01,
        "download.retries": 3,
    }
    o.update(over)
    return load_config(None, o)


def test_a_run_via_sentinelhub_gives_the_local_outputs_and_never_shows_the_secret(
    sim, sh, tmp_path, monkeypatch, caplog
):
    import geopandas as gpd
    import numpy as np

    monkeypatch.setattr(shmod, "MAX_PX", 64)  # the 1 km AOI (+ margin) becomes 2 x 2 requests at 10 m
    caplog.set_level(logging.DEBUG)
    sh.faults = {"/api/v1/process": ["429"]}
    local = run(
        load_config(
            None,
            {
                "aoi": sim.aoi,
                "period.start": sim.start.isoformat(),
                "period.end": sim.end.isoformat(),
                "out": tmp_path / "local",
                "source.catalog": sim.catalog,
                "compute.workers": 2,
            },
        )
    )
    res = run(sh_config(sim, sh, tmp_path / "sh"))
    assert run_checker("check_run.py", res.out).returncode == 0
    m = res.manifest
    assert m["source"] == "sentinelhub"
    assert len(m["scenes_used"]) == len(local.manifest["scenes_used"])
    assert m["fetch"]["scenes_new"] == len(m["scenes_used"]) + 1 and m["fetch"]["scenes_failed"] == 0  # + DEM
    assert m["fetch"]["http_retries"] >= 1  # the 429
    # harmonised values, offset 0 stated per asset: same reflectances, same detections as the local run
    local_sites = local.manifest["counts"]["sites"]
    assert local_sites > 0 and abs(m["counts"]["sites"] - local_sites) <= 1
    # the same pixels: the same table and footprints; only the clearings' mean slope differs a little,
    # as the service resamples the DEM where the local path has our loader do it
    assert (local.out / "yearly_summary.csv").read_bytes() == (res.out / "yearly_summary.csv").read_bytes()
    for layer in ("ponds", "clearings", "sites"):
        a, b = (
            gpd.read_file(local.out / "footprints.gpkg", layer=layer),
            gpd.read_file(res.out / "footprints.gpkg", layer=layer),
        )
        assert a.geometry.geom_equals_exact(b.geometry, 1e-6).all(), layer
        cols = [c for c in a.columns if c not in ("geometry", "mean_slope_deg")]
        exact = [c for c in cols if a[c].dtype.kind not in "f"]
        assert a[exact].equals(b[exact]), layer
        # evidence means and confidence are float sums over the same pixels, and confidence weighs
        # the slope: equal to rounding
        floats = [c for c in cols if c not in exact]
        assert np.allclose(a[floats].to_numpy(float), b[floats].to_numpy(float), atol=0.05, equal_nan=True), layer
        if layer == "clearings":
            assert (a.mean_slope_deg - b.mean_slope_deg).abs().max() < 1.0
    # tiles under the limit, mosaicked on the AOI lattice
    sizes = {(b["output"]["width"], b["output"]["height"]) for b in sh.process_requests}
    assert max(max(s) for s in sizes) <= 64 and len(sh.process_requests) > 2 * (len(m["scenes_used"]) + 1)
    item = json.loads(next((tmp_path / "cache").rglob("sentinel-2-l2a/*/item.json")).read_text())
    assert item["assets"]["red"]["raster:bands"][0]["offset"] == 0.0
    assert item["properties"]["sentinelhub:harmonized"] is True
    # the secret: nowhere in the run dir, the cache, or the logs
    for p in [*res.out.rglob("*"), *(tmp_path / "cache").rglob("*.json")]:
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in caplog.text and SECRET not in json.dumps(m)


def test_token_refresh_catalog_paging_and_retry(sim, sh, monkeypatch):
    from pipeline.aoi import load_aoi

    monkeypatch.setattr(shmod, "PAGE_SIZE", 3)
    aoi = load_aoi(sim.aoi)
    src = shmod.SentinelHubSource(
        sh.url, sh.token_url, download=DownloadConfig(backoff_s=0.01, retries=3), grid=aoi.grid
    )
    found = src.search(aoi.geometry, sim.start, sim.end, 100)
    served = sh.served()
    assert len(found.scenes) == len(served) > 3
    assert len(sh.catalog_bodies) == -(-len(served) // 3)  # pages followed by `next`
    assert [b.get("next") for b in sh.catalog_bodies[:3]] == [None, 3, 6]
    assert sh.token_requests == 1  # one token for all pages

    # a token revoked early: 401, a new token, the request succeeds
    sh.revoke_all()
    got = src.render(found.scenes[0], ["scl"])
    assert got["scl"][0].dtype.name == "uint8" and sh.token_requests == 2

    # a token about to expire is refreshed before it is used
    sh.expires_in = shmod.TOKEN_MARGIN_S + 1
    sh.revoke_all()
    src.render(found.scenes[0], ["scl"])
    assert sh.token_requests == 3
    time.sleep(2.1)  # the token now expires within the margin (oauthlib rounds expires_at to the second)
    src.render(found.scenes[0], ["scl"])
    assert sh.token_requests == 4

    # 429 with Retry-After: retried, counted
    sh.faults = {"/api/v1/process": ["429", "503"]}
    before = src.http.stats.retries
    src.render(found.scenes[1], ["blue"])
    assert src.http.stats.retries - before == 2


def test_missing_or_refused_credentials_are_one_line_without_the_secret(sim, sh, tmp_path, monkeypatch):
    monkeypatch.setenv("SH_CLIENT_SECRET", "wrong-" + SECRET)
    from pipeline.aoi import load_aoi

    aoi = load_aoi(sim.aoi)
    src = shmod.SentinelHubSource(
        sh.url, sh.token_url, download=DownloadConfig(backoff_s=0.01, retries=1), grid=aoi.grid
    )
    with pytest.raises(SourceError) as e:
        src.search(aoi.geometry, sim.start, sim.end, 100)
    assert (
        "Invalid client credentials" in str(e.value) and SECRET not in str(e.value) and "SH_CLIENT_ID" in str(e.value)
    )
    assert len(str(e.value).splitlines()) == 1

    # the service unreachable: one line that names the URL to check
    down = shmod.SentinelHubSource(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/token",
        grid=aoi.grid,
        download=DownloadConfig(backoff_s=0.01, retries=1),
    )
    with pytest.raises(SourceError) as e:
        down.search(aoi.geometry, sim.start, sim.end, 100)
    assert "http://127.0.0.1:9/token" in str(e.value) and "sh_token_url" in str(e.value)
    assert len(str(e.value).splitlines()) == 1 and SECRET not in str(e.value)

    monkeypatch.delenv("SH_CLIENT_ID")
    monkeypatch.delenv("SH_CLIENT_SECRET")
    with pytest.raises(ConfigError):
        shmod.load_credentials()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--aoi",
            str(sim.aoi),
            "--source",
            "sentinelhub",
            "--start",
            "2022-01-01",
            "--end",
            "2022-12-31",
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "-q",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = res.stderr.strip().splitlines()
    assert (
        res.returncode == 2
        and lines[-1].startswith("error: ")
        and "SH_CLIENT_ID" in lines[-1]
        and "SH_CLIENT_SECRET" in lines[-1]
    ), res.stderr
    assert "Traceback" not in res.stderr

    # a sentinelhub config profile serves instead of the environment
    prof = tmp_path / "xdg" / "sentinelhub"
    prof.mkdir(parents=True, exist_ok=True)
    (prof / "config.toml").write_text(
        f'[default-profile]\nsh_client_id = "{CLIENT_ID}"\nsh_client_secret = "{SECRET}"\n'
    )
    creds, _, _ = shmod.load_credentials()
    assert creds.client_id == CLIENT_ID and creds.origin == "sentinelhub profile" and SECRET not in repr(creds)
