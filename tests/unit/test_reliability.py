"""Atomic run dirs, `verify`, recovery after a killed run, and composite stores that are never trusted
half-written."""

import json
import os

import pytest

from pipeline import export
from pipeline.errors import OutputError


def _fake_run(d, text="a"):
    d.mkdir(parents=True)
    (d / export.GPKG).write_text(f"gpkg {text}")
    (d / export.SUMMARY).write_text(f"csv {text}")
    export.write_manifest(d / export.MANIFEST, {"aoi": text}, [d / export.GPKG, d / export.SUMMARY])
    return d


def test_verify_passes_a_good_run_and_names_each_kind_of_damage(tmp_path, cli):
    run = _fake_run(tmp_path / "run")
    assert export.verify_run(run) == {"ok": [export.GPKG, export.SUMMARY], "problems": []}
    code, out, _ = cli("verify", "--run", run)
    assert code == 0 and "ok: 2 outputs" in out
    (run / export.SUMMARY).write_text("csv b")  # same size, other bytes
    (run / "stray.txt").write_text("?")
    problems = export.verify_run(run)["problems"]
    assert problems == ["yearly_summary.csv: sha256 differs from run.json", "stray.txt: not listed in run.json"]
    (run / export.GPKG).write_text("gpkg")  # cut short
    assert "footprints.gpkg: 4 bytes, run.json says 6" in export.verify_run(run)["problems"]
    (run / export.GPKG).unlink()
    code, _, err = cli("verify", "--run", run)
    assert code != 0 and err.count("error:") == 1 and "footprints.gpkg: missing (and 2 more)" in err
    assert "rerun the pipeline" in err
    code, _, err = cli("verify", "--run", tmp_path / "nope")
    assert code != 0 and "does not exist" in err


def test_a_rerun_swaps_the_run_dir_in_one_step(tmp_path):
    out = _fake_run(tmp_path / "run", "old")
    inode = os.stat(out).st_ino
    with export.staged_run_dir(out) as tmp:
        _fake_run(tmp / "x", "new")
        for f in (tmp / "x").iterdir():
            f.rename(tmp / f.name)
        (tmp / "x").rmdir()
        assert json.loads((out / export.MANIFEST).read_text())["aoi"] == "old"  # untouched until the end
    assert json.loads((out / export.MANIFEST).read_text())["aoi"] == "new"
    assert os.stat(out).st_ino != inode and export.verify_run(out)["problems"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_killed_between_the_two_renames_gets_its_previous_run_back(tmp_path, monkeypatch):
    """Where renameat2 is missing the swap is two renames; a kill between them leaves no run dir,
    only .run.previous, which the next run restores before anything else."""
    out = tmp_path / "run"
    _fake_run(tmp_path / f".run{export.PREVIOUS_SUFFIX}", "old")
    (tmp_path / ".run.partial-999999999").mkdir()  # a dead process's half-written run
    (tmp_path / ".run.log-999999999").write_text("log")
    (tmp_path / f".run.partial-{os.getpid()}").mkdir()  # ours: left alone by recover
    export.recover(out)
    assert json.loads((out / export.MANIFEST).read_text())["aoi"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".run.partial-{os.getpid()}", "run"]
    # and the two-rename path itself works when the kernel cannot exchange
    monkeypatch.setattr(export, "_rename_exchange", lambda a, b: False)
    with export.staged_run_dir(out) as tmp:
        (tmp / export.GPKG).write_text("new")
        export.write_manifest(tmp / export.MANIFEST, {"aoi": "new"}, [tmp / export.GPKG])
    assert json.loads((out / export.MANIFEST).read_text())["aoi"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failure_inside_the_stage_keeps_the_previous_run(tmp_path):
    out = _fake_run(tmp_path / "run", "old")
    with pytest.raises(RuntimeError), export.staged_run_dir(out) as tmp:
        (tmp / export.GPKG).write_text("half")
        raise RuntimeError("boom")
    assert export.verify_run(out)["problems"] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_verify_refuses_a_manifest_without_checksums(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / export.MANIFEST).write_text("{}")
    with pytest.raises(OutputError, match="lists no output checksums"):
        export.verify_run(d)


def test_composite_store_without_its_marker_or_with_a_changed_file_is_recomputed(tmp_path):
    import numpy as np
    import pandas as pd

    from pipeline.store import CompositeStore, marker_path, open_layers, write_block

    store = CompositeStore(tmp_path)
    months, y, x = pd.date_range("2022-01-01", periods=2, freq="MS"), np.arange(4.0), np.arange(4.0)

    def fill(path):
        layers = open_layers(path, write=True)
        for m in range(2):
            write_block(layers, m, (0, 4), (0, 4), np.ones((4, 4, 4), np.int16), np.ones((3, 4, 4), np.float32))

    store.save(2022, "k1", months, y, x, 4, 4, fill)
    assert store.load(2022, "k1", 2, (4, 4)) is not None
    # a killed write never renames its store into place; a store renamed by hand without the marker,
    # or whose chunk changed on disk since, is recomputed too
    p = store.path(2022, "k1")
    chunk = next(
        f
        for f in sorted(p.rglob("*"))
        if f.is_file() and "valid" in f.parts and "zarr" not in f.name and not f.name.startswith(".")
    )
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert store.load(2022, "k1", 2, (4, 4)) is None and not p.exists()
    store.save(2022, "k1", months, y, x, 4, 4, fill)
    marker_path(p).unlink()
    assert store.load(2022, "k1", 2, (4, 4)) is None
    # a run's scratch store is committed without checksums: never trusted, should one be pointed at
    CompositeStore(tmp_path, checksums=False).save(2022, "k1", months, y, x, 4, 4, fill)
    assert p.exists() and store.load(2022, "k1", 2, (4, 4)) is None
