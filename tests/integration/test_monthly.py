"""Monthly runs against a STAC API served on loopback whose archive grows by a month.

The double serves a simulated 2021-2022 catalog; the scenes after a cut-off date are held back and
then "published", as the real archive publishes the latest month.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from datetime import date

import geopandas as gpd
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer

from pipeline.config import load_config
from pipeline.errors import SourceError
from pipeline.lab.simulate import simulate
from pipeline.monthly import EXIT_LOCKED, EXIT_NOTHING_NEW, MonthlyPaths, monthly
from tests.stac_api_double import StacApiDouble
from tests.support import REPO, run_checker


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), seed=1, size_km=1, start_year=2021, end_year=2022, revisit_days=30)


@pytest.fixture
def api(sim):
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    url = server.url_for("/").rstrip("/")
    double = StacApiDouble(sim.catalog, url)
    double.url = url
    double.all_items = list(double.items)
    server.expect_request(re.compile(".*")).respond_with_handler(double)
    yield double
    server.clear()
    if server.is_running():
        server.stop()


def publish_until(api, day: str) -> list[str]:
    """Serve only the scenes sensed up to ``day`` (and the DEM); returns the ids of the S2 scenes
    served under the 90% cloud limit."""
    api.items = [
        d for d in api.all_items if d["collection"] != "sentinel-2-l2a" or d["properties"]["datetime"][:10] <= day
    ]
    return [
        d["id"] for d in api.items if d["collection"] == "sentinel-2-l2a" and d["properties"]["eo:cloud_cover"] <= 90
    ]


def cli_args(sim, api, tmp_path) -> list[str]:
    return [
        "--aoi",
        str(sim.aoi),
        "--source",
        "earth-search",
        "--stac-url",
        api.url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--start",
        sim.start.isoformat(),
        "--out",
        str(tmp_path / "out" / "sim"),
        "--set",
        "compute.workers=2",
        "--set",
        "download.backoff_s=0.01",
        "-q",
    ]


def cfg_for(sim, api, tmp_path, **over):
    o = {
        "aoi": sim.aoi,
        "source.kind": "earth-search",
        "source.stac_url": api.url,
        "cache.dir": tmp_path / "cache",
        "period.start": sim.start.isoformat(),
        "period.end": sim.end.isoformat(),
        "out": tmp_path / "out" / "sim",
        "compute.workers": 2,
        "download.backoff_s": 0.01,
        "download.retries": 2,
    }
    o.update(over)
    return load_config(None, o)


def runs(tmp_path) -> list[dict]:
    with open(tmp_path / "out" / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_monthly_fetches_nothing_after_a_full_run_then_only_the_new_month(sim, api, tmp_path):
    served = publish_until(api, "2022-11-30")
    first = monthly(cfg_for(sim, api, tmp_path), today=date(2022, 11, 30))
    assert first.exit_code == 0 and first.status == "updated"
    assert first.scenes_new == sorted(served)  # no state yet: everything is new
    out = tmp_path / "out" / "sim"
    assert run_checker("check_run.py", out).returncode == 0
    m1 = json.loads((out / "run.json").read_text())
    assert m1["fetch"]["scenes_new"] == len(served) + 1  # + the DEM tile
    assert m1["config"]["compute"]["composite_dir"] == str(MonthlyPaths(out).composites)
    summary = pd.read_csv(out / "yearly_summary.csv")
    assert summary["provisional"].tolist() == [False, True]  # 2021 final, 2022 provisional
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}

    # right after: the command line, as cron calls it; nothing new, outputs untouched, seconds
    api.log.clear()
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "monthly", *cli_args(sim, api, tmp_path), "--today", "2022-11-30"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - t0
    assert res.returncode == EXIT_NOTHING_NEW, res.stderr
    assert seconds < 20, seconds
    print(f"\nmonthly right after a full run: nothing new in {seconds:.1f} s (whole command)")
    assert not api.requests_for("/files/")  # searched, nothing downloaded
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before

    # a month later the archive holds December's scenes: only those are fetched, only 2022 recounted
    served_dec = publish_until(api, "2022-12-31")
    december = sorted(set(served_dec) - set(served))
    assert december
    api.log.clear()
    sites_nov = gpd.read_file(out / "footprints.gpkg", layer="sites")
    hook = tmp_path / "notified.txt"
    notify = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\" {hook}"
    third = monthly(cfg_for(sim, api, tmp_path), today=date(2022, 12, 31), notify=notify)
    m3 = third.manifest
    assert third.exit_code == 0 and third.scenes_new == december
    assert m3["fetch"]["scenes_new"] == len(december) and m3["fetch"]["new"] == december
    assert m3["fetch"]["scenes_cached"] == len(served) + 1
    assert set(december) <= set(m3["scenes_used"])
    assert m3["composite_years_reused"] == [2021]  # the year the new scenes do not touch
    files = {p for _, p, _ in api.requests_for("/files/")}
    assert files and all(any(d in p for d in december) for p in files)
    assert run_checker("check_run.py", out).returncode == 0
    # every site of November still there in December kept its register id, grown or not
    sites_dec = gpd.read_file(out / "footprints.gpkg", layer="sites")
    pairs = gpd.sjoin(sites_nov, sites_dec, predicate="intersects", lsuffix="nov", rsuffix="dec")
    assert len(sites_nov) and pairs["site_id_nov"].nunique() == len(sites_nov)
    assert set(sites_nov["site_id"]) <= set(sites_dec["site_id"])
    changes = pd.read_csv(out / "changes.csv")
    assert set(changes["site_id"]) <= set(sites_dec["site_id"]) | set(sites_nov["site_id"])
    if len(changes):  # the hook ran with the changes file
        assert hook.read_text() == str(out / "changes.csv")

    # the source down: the run fails with its own code, recorded, outputs and state untouched
    before, state_before = (out / "run.json").read_bytes(), MonthlyPaths(out).state.read_text()
    with pytest.raises(SourceError) as e:
        monthly(
            cfg_for(sim, api, tmp_path, **{"source.stac_url": "http://127.0.0.1:9", "download.retries": 0}),
            today=date(2023, 1, 31),
        )
    assert e.value.exit_code not in (0, EXIT_NOTHING_NEW, EXIT_LOCKED)
    assert (out / "run.json").read_bytes() == before and MonthlyPaths(out).state.read_text() == state_before

    rows = runs(tmp_path)
    assert [r["status"] for r in rows] == ["updated", "nothing new", "updated", "failed"]
    assert [r["changes"] for r in rows] == [str(out / "changes.csv"), "", str(out / "changes.csv"), ""]
    assert [r["exit_code"] for r in rows] == ["0", str(EXIT_NOTHING_NEW), "0", str(e.value.exit_code)]
    assert "127.0.0.1:9" in rows[3]["message"]
    assert [r["scenes_new"] for r in rows] == [str(len(served)), "0", str(len(december)), ""]
    assert rows[0]["sites_new"] == rows[0]["sites_total"] == str(m1["counts"]["sites"])
    assert all(float(r["duration_s"]) > 0 for r in rows)
    state = json.loads(MonthlyPaths(out).state.read_text())
    assert state["searched_to"] == "2022-12-31" and set(december) <= set(state["scenes_known"])


def test_a_second_run_while_one_holds_the_lock_exits_at_once(sim, api, tmp_path):
    out = tmp_path / "out" / "sim"
    paths = MonthlyPaths(out)
    out.parent.mkdir(parents=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running monthly holds it
    os.write(fd, b"pid 4242 since 2022-12-01T03:00:00+00:00\n")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "pipeline", "monthly", *cli_args(sim, api, tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(fd)
    assert res.returncode == EXIT_LOCKED
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "in progress" in err[0] and "pid 4242" in err[0], res.stderr
    assert not api.log and not out.exists()  # nothing searched, nothing written
    assert [r["status"] for r in runs(tmp_path)] == ["locked"]


def test_a_failing_notify_hook_is_logged_and_does_not_fail(tmp_path, caplog):
    from pipeline.monthly import notify_changes

    changes = tmp_path / "changes.csv"
    changes.write_text("site_id,change\n1,new\n")
    assert notify_changes(f"{sys.executable} -c 'raise SystemExit(3)'", changes) is False
    assert notify_changes(str(tmp_path / "no-such-hook"), changes) is False
    assert sum("notify hook" in r.getMessage() for r in caplog.records) == 2
    got = tmp_path / "got.txt"
    assert notify_changes(f"{sys.executable} -c \"import sys; open('{got}', 'w').write(sys.argv[1])\"", changes)
    assert got.read_text() == str(changes)


def test_a_runs_csv_of_an_older_version_gets_the_new_columns_and_keeps_its_rows(tmp_path):
    from pipeline.monthly import RUNS_CSV_FIELDS, _append_row

    old_fields = [f for f in RUNS_CSV_FIELDS if f != "changes"]
    path = tmp_path / "runs.csv"
    path.write_text(",".join(old_fields) + "\n" + ",".join(["2026-01-01", "x", "updated", "0"] + [""] * 6) + "\n")
    _append_row(path, {"started": "2026-02-01", "aoi": "x", "status": "updated", "exit_code": 0, "changes": "c.csv"})
    rows = list(csv.DictReader(path.open()))
    assert [r["started"] for r in rows] == ["2026-01-01", "2026-02-01"]
    assert [r["changes"] for r in rows] == ["", "c.csv"] and list(rows[0]) == RUNS_CSV_FIELDS
