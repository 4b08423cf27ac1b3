"""SIGKILL `python -m pipeline run` during search, compute and export: the previous run stays intact
(verify passes, same outputs), and the next run completes with outputs identical to an uninterrupted run.

The suite kills at four chosen stages. The campaign of random kill times (with a rerun after each kill)
runs with RELIABILITY_KILL_TRIALS=20 set, and prints its counts:

    RELIABILITY_KILL_TRIALS=20 python -m pytest -q -s tests/e2e/test_crash.py -k campaign
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import export
from tests.support import fingerprint, pipeline_argv, subprocess_env


def _argv(f, out: Path, composites: Path) -> list[str]:
    return pipeline_argv(f, out=out, set=f"compute.composite_dir={composites}")


def full_run(f, out: Path, composites: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(_argv(f, out, composites), capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return time.perf_counter() - t0


def kill_run(
    f, out: Path, composites: Path, *, marker: str | None = None, after_s: float | None = None, then_s: float = 0.0
) -> str:
    """Start a run, SIGKILL it ``then_s`` after its log shows ``marker`` (or after ``after_s``); returns the
    stage it was in."""
    p = subprocess.Popen(
        _argv(f, out, composites), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env()
    )
    log = out.parent / f".{out.name}.log-{p.pid}"
    t0 = time.perf_counter()
    try:
        while p.poll() is None:
            text = log.read_text() if log.exists() else ""
            if (marker is not None and marker in text) or (after_s is not None and time.perf_counter() - t0 >= after_s):
                time.sleep(then_s)
                break
            if time.perf_counter() - t0 > 240:
                pytest.fail(f"run never reached {marker!r}")
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    text = log.read_text() if log.exists() else ""
    if p.returncode != -signal.SIGKILL:
        return "finished"
    stages = re.findall(r"stage (\w[\w ]*?) \.\.\.", text)
    if "report:" in text.splitlines()[-1] if text else False:
        return "export (report written)"
    return stages[-1] if stages else "start-up"


KILL_MARKERS = ["stage search", "stage count", "stage onsets", "stage vectorise", "stage export", "report:"]


def assert_intact(out: Path, expected: dict):
    v = export.verify_run(out)
    assert v["problems"] == [], v["problems"]
    assert fingerprint(out) == expected


def drop_stores(composites: Path, rng: random.Random | None = None, years=(2022,)):
    """Make the next run recompute some years, so kills land in composite writes too."""
    for p in composites.glob("monthly-*"):
        if any(f"monthly-{y}-" in p.name for y in years) and (rng is None or rng.random() < 0.7):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_killed_at_each_stage_previous_run_survives_and_rerun_is_identical(tiny_catalog):
    f = tiny_catalog
    out, composites = f["root"] / "run", f["root"] / "composites"
    full_run(f, out, composites)
    expected = fingerprint(out)
    seen = []
    for marker, drop in (
        ("stage search", False),
        ("stage count", True),
        ("stage onsets", False),
        ("stage export", False),
    ):
        if drop:
            drop_stores(composites)
        seen.append(kill_run(f, out, composites, marker=marker))
        assert_intact(out, expected)
    # each kill lands at or just after its marker (how far after depends on the machine's load); the
    # first three stages are long enough that none may let the run finish
    assert "finished" not in seen[:3] and "start-up" not in seen, seen
    if seen[-1] != "finished":  # a run that finished has already cleared the earlier kills' debris
        assert leftovers(out), "the kills should have left debris for the rerun to clear"
    full_run(f, out, composites)
    assert_intact(out, expected)
    assert leftovers(out) == []


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RELIABILITY_KILL_TRIALS"), reason="set RELIABILITY_KILL_TRIALS=20 to run")
def test_kill_campaign_at_random_times(tiny_catalog):
    trials = int(os.environ["RELIABILITY_KILL_TRIALS"])
    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", "7")))
    f = tiny_catalog
    out, composites = f["root"] / "run", f["root"] / "composites"
    reference = f["root"] / "reference"
    full_run(f, reference, f["root"] / "ref-composites")  # uninterrupted
    expected = fingerprint(reference)
    drop_stores(f["root"] / "ref-composites", years=(2021, 2022, 2023))
    t_full = full_run(f, reference, f["root"] / "ref-composites")  # how long a run takes, cold stores
    full_run(f, out, composites)
    assert fingerprint(out) == expected
    stages, failures = [], 0
    for i in range(trials):
        drop_stores(composites, rng, years=(2021, 2022, 2023))
        # half the trials at a random time over a whole run, half at a random moment after a random
        # stage begins (a plain random time mostly lands in the counting, the longest stage)
        if i % 2 == 0:
            at = rng.uniform(0.05, 0.98) * t_full
            stage = kill_run(f, out, composites, after_s=at)
        else:
            marker, at = rng.choice(KILL_MARKERS), rng.uniform(0.0, 0.6)
            stage = kill_run(f, out, composites, marker=marker, then_s=at)
        stages.append(stage)
        try:
            assert_intact(out, expected)
            full_run(f, out, composites)
            assert_intact(out, expected)
            assert leftovers(out) == []
        except AssertionError as e:
            failures += 1
            print(f"trial {i}: killed at {at:.2f}s ({stage}): FAILED {e}")
        else:
            print(f"trial {i}: killed at {at:.2f}s in {stage}: previous run intact, rerun identical")
    from collections import Counter

    print(f"a full run took {t_full:.1f}s; kill times drawn uniformly over it")
    print(f"{trials} kill-and-rerun trials, {failures} failures; stages killed in: {dict(Counter(stages))}")
    assert failures == 0
