"""Resource faults: a disk that fills during export (a real size-limited tmpfs, mounted when the tests run
as root), a failing writer at the file-write layer (anywhere), and a dask scheduler killed mid-run. Each:
one error line, a non-zero exit, the previous run untouched (verify passes, same bytes)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline import export
from tests.support import REPO, catalog_config, fingerprint, pipeline_argv

# the long checks (a cluster to start, a 15 s reconnect wait): RELIABILITY_KILL_TRIALS=20 python -m pytest ...
LONG = bool(os.environ.get("RELIABILITY_KILL_TRIALS"))


def _cli(f, out, *extra, composites=None, timeout=300):
    argv = [*pipeline_argv(f, out=out), *extra]
    if composites:
        argv += ["--set", f"compute.composite_dir={composites}"]
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout
    )


def _one_error_line(r):
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a given size (needs root and mount); skipped where it cannot be mounted."""
    mounts = []

    def make(size_kb: int) -> Path:
        d = tmp_path / f"disk-{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_during_export_on_a_real_small_filesystem(tiny_catalog, small_disk):
    f = tiny_catalog
    good = f["root"] / "good"
    assert _cli(f, good).returncode == 0
    (good / "run.log").unlink()
    size_kb = sum(p.stat().st_size for p in good.iterdir()) // 1024
    expected = fingerprint(good)
    # room for the previous run plus 70 kB (fails in the GeoPackage, reported by GDAL/SQLite) or plus
    # 200 kB (fails later, as ENOSPC from a Python write)
    for spare_kb in (70, 200) if LONG else (70,):
        disk = small_disk(size_kb + spare_kb)
        out = disk / "run"
        shutil.copytree(good, out)
        r = _cli(f, out, composites=f["root"] / "composites")
        line = _one_error_line(r)
        assert "free disk space" in line and "previous run is untouched" in line, line
        assert export.verify_run(out)["problems"] == [] and fingerprint(out) == expected
        assert not [p for p in disk.iterdir() if p.name.startswith(".run.")]
    if not LONG:
        return
    # composites on the full disk too: the failure comes before the export
    disk = small_disk(size_kb + 60)
    shutil.copytree(good, disk / "run")
    line = _one_error_line(_cli(f, disk / "run", composites=disk / "composites"))
    assert "free disk space" in line
    assert export.verify_run(disk / "run")["problems"] == []


def test_a_failing_writer_at_the_file_layer(tiny_catalog, monkeypatch):
    """Where no filesystem can be mounted: every write of the summary CSV fails with ENOSPC."""
    import errno

    from pipeline.errors import OutputError
    from pipeline.run import run

    f = tiny_catalog
    cfg = catalog_config(f)
    run(cfg)
    before = fingerprint(f["root"] / "run")

    def full(path, table):
        Path(path).write_bytes(b"aoi,year,si")  # a few bytes got out, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export, "write_summary", full)
    with pytest.raises(OutputError, match="No space left on device.*free disk space; the previous run is untouched"):
        run(cfg)
    assert export.verify_run(f["root"] / "run")["problems"] == [] and fingerprint(f["root"] / "run") == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="set RELIABILITY_KILL_TRIALS=20 to run the long checks")
def test_a_scheduler_that_dies_mid_run(tiny_catalog):
    f = tiny_catalog
    out = f["root"] / "run"
    assert _cli(f, out).returncode == 0
    before = fingerprint(out)
    port = _free_port()
    dask = Path(sys.executable).with_name("dask")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sched = subprocess.Popen(
        [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    worker = subprocess.Popen(
        [
            str(dask),
            "worker",
            f"tcp://127.0.0.1:{port}",
            "--nthreads",
            "2",
            "--no-dashboard",
            "--local-directory",
            str(f["root"] / f"w-{uuid.uuid4().hex[:6]}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        argv = pipeline_argv(f, out=out, scheduler=f"tcp://127.0.0.1:{port}")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        log = out.parent / f".run.log-{p.pid}"
        t0 = time.time()
        while p.poll() is None and "stage count" not in (log.read_text() if log.exists() else ""):
            assert time.time() - t0 < 120
            time.sleep(0.05)
        sched.send_signal(signal.SIGKILL)
        _, err = p.communicate(timeout=180)
    finally:
        for proc in (sched, worker):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    r = subprocess.CompletedProcess(argv, p.returncode, "", err)
    line = _one_error_line(r)
    assert "stopped answering mid-run" in line and "no output was replaced" in line, line
    assert export.verify_run(out)["problems"] == [] and fingerprint(out) == before


def test_disk_full_while_simulating_on_a_real_small_filesystem(small_disk):
    disk = small_disk(400)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "simulate",
            "-q",
            "--seed",
            "3",
            "--size-km",
            "1.5",
            "--start-year",
            "2023",
            "--end-year",
            "2023",
            "--out",
            str(disk / "sim"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    line = _one_error_line(r)
    assert "disk full" in line and "free disk space" in line, line
    assert not (disk / "sim" / "catalog.json").exists() and not list((disk / "sim").glob(".partial-*"))
