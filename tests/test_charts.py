"""The report's charts: read from the yearly summary, drawn in the run's process or in the chart
process the CLI starts, the same either way, and still drawn if that process dies."""
import math
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline import charts

SUMMARY = """aoi,year,sites_new,sites_total,ponds_new,ponds_total,pond_area_m2,cleared_area_new_m2,footprint_total_m2,valid_observations,provisional,gap
x,2021,3,3,4,4,1200.0,52000.0,53200.0,20,False,False
x,2022,,3,,4,1200.0,,53200.0,0,False,True
x,2023,2,5,1,5,1500.0,30000.0,83500.0,9,True,False
"""


@pytest.fixture
def summary(tmp_path):
    path = tmp_path / "yearly_summary.csv"
    path.write_text(SUMMARY)
    return path


def test_summary_columns_keep_gaps_and_provisional_years(summary):
    t = charts.read_summary(summary)
    assert t["year"] == [2021, 2022, 2023]
    assert t["provisional"] == [False, False, True]
    assert t["sites_total"] == [3.0, 3.0, 5.0]
    assert t["sites_new"][0] == 3.0 and math.isnan(t["sites_new"][1])  # a gap: unknown, not zero
    assert t["footprint_total_m2"][2] == 83500.0


def test_charts_mark_gap_and_provisional_years(summary, tmp_path):
    svgs = charts.draw(summary, "x", tmp_path)
    assert set(svgs) == {"sites", "footprint"}
    assert "(gap)" in svgs["sites"] and "(+2)" in svgs["sites"]
    assert "hatched: provisional" in svgs["footprint"]
    for key in ("sites", "footprint"):
        assert all(f'id="{key}-bar-{y}"' in svgs[key] for y in (2021, 2022, 2023))
    for png in (charts.SITES_PNG, charts.FOOTPRINT_PNG):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_chart_process_draws_what_the_run_would(summary, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    expected = charts.draw(summary, "x", here)
    charts.start_worker()
    worker = charts._worker
    assert worker is not None
    with ThreadPoolExecutor(1) as threads:
        drawn = charts.submit(summary, "x", there, threads)
        assert charts._worker is None  # one run's job: the next run starts its own
        assert charts.result(drawn, summary, "x", there) == expected
    for png in (charts.SITES_PNG, charts.FOOTPRINT_PNG):
        assert (there / png).read_bytes() == (here / png).read_bytes()


def test_charts_are_drawn_even_if_the_chart_process_dies(summary, tmp_path):
    charts.start_worker()
    worker = charts._worker
    worker.submit(int).result()  # started and past its imports
    for pid in list(worker._processes):
        os.kill(pid, signal.SIGKILL)
    with ThreadPoolExecutor(1) as threads:
        drawn = charts.submit(summary, "x", tmp_path, threads)
        svgs = charts.result(drawn, summary, "x", tmp_path)
    assert set(svgs) == {"sites", "footprint"}
    assert (tmp_path / charts.SITES_PNG).is_file()


def test_without_a_chart_process_the_charts_are_drawn_in_a_thread(summary, tmp_path, monkeypatch):
    monkeypatch.setattr(charts, "_worker", None)
    with ThreadPoolExecutor(1, thread_name_prefix="export") as threads:
        drawn = charts.submit(summary, "x", tmp_path, threads)
        assert charts.result(drawn, summary, "x", tmp_path)["sites"].startswith("<svg")


def test_the_chart_process_leaves_with_a_killed_run(tmp_path):
    # a run killed outright (SIGKILL, the out-of-memory killer) cannot stop its chart process
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "from pipeline import charts; charts.start_worker(); w = charts._worker; w.submit(int).result(); "
        "print(*w._processes, flush=True); import os, signal; os.kill(os.getpid(), signal.SIGKILL)")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    child = int(parent.stdout.readline())
    parent.wait(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":  # exited, waiting for init to reap it
                return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the chart process outlived its killed run")
