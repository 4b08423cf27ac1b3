"""The CLI guides: examples in every --help, --dry-run, progress passed in, a log file in the run dir."""

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.run import run
from tests.support import REPO, catalog_config, run_args

COMMANDS = ["run", "simulate", "evaluate", "demo", "aois", "export", "report", "reference", "settings"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Example" in res.output and f"python -m pipeline {command}" in res.output


def test_make_help_lists_every_target_with_one_line():
    targets = set(re.findall(r"^([a-z][a-zA-Z_-]*):(?!=)", (REPO / "Makefile").read_text(), re.M))
    out = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True).stdout
    listed = {line.split()[1] for line in out.splitlines() if line.strip().startswith("make ")}
    assert targets == listed, (targets, listed)


def _args(f, out, *extra):
    return [*run_args(f, quiet=False, out=out), *extra]


def test_dry_run_lists_scenes_and_volume_and_writes_nothing(tiny_catalog):
    out = tiny_catalog["root"] / "run"
    res = CliRunner().invoke(app, _args(tiny_catalog, out, "--dry-run"))
    assert res.exit_code == 0, res.output
    assert "scenes found: 36" in res.output
    # 1 km AOI inset 100 m -> 1000 m grid snapped to 20 m: 100 x 100 px; blue, green, red, nir at 10 m
    # (2 bytes), swir16 at 20 m (2 bytes), scl at 20 m (1 byte)
    per_scene = 4 * 100 * 100 * 2 + 50 * 50 * 2 + 50 * 50 * 1
    assert f"{per_scene / 1e6:.1f} MB" in res.output
    assert res.output.count("S2A_47RQL_") == 36
    assert not out.exists()


def test_cli_run_writes_its_log_into_the_run_dir(tiny_catalog):
    out = tiny_catalog["root"] / "run"
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", *_args(tiny_catalog, out, "--quiet")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # --quiet: nothing but warnings and errors
    assert " INFO " not in res.stderr, res.stderr
    log = (out / "run.log").read_text()
    for stage in ("search", "count", "onsets", "vectorise", "export"):
        assert f"stage {stage}" in log
    assert not list(out.parent.glob(".run.log-*"))


def test_failed_run_keeps_its_log_beside(tiny_catalog):
    out = tiny_catalog["root"] / "run"
    args = _args(tiny_catalog, out)
    args[args.index("--start") + 1], args[args.index("--end") + 1] = "2019-01-01", "2019-12-31"
    res = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO)
    assert res.returncode != 0 and not out.exists()
    failed = out.parent / "run.failed.log"
    assert failed.is_file() and str(failed) in res.stderr


class Recorder:
    bars = []

    def __init__(self, total=0, desc="", unit=""):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False
        Recorder.bars.append(self)

    def update(self, n=1):
        self.n += n

    def refresh(self):
        pass

    def close(self):
        self.closed = True


def test_progress_is_passed_in_and_ticked(tiny_catalog):
    f = tiny_catalog
    cfg = catalog_config(f)
    Recorder.bars = []
    run(cfg, progress=Recorder)
    bars = {b.desc: b for b in Recorder.bars}
    # one bar for the count stage (every year at once) and one for the onsets, each ticked to its end
    assert set(bars) == {"count", "onsets"}
    assert all(b.total > 0 and b.n == b.total for b in bars.values())
    assert all(b.closed for b in Recorder.bars)


def test_run_help_points_to_the_settings():
    res = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "python -m pipeline settings" in res.output
