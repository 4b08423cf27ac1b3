"""Writers for a run directory (contract 4): footprints.gpkg, yearly_summary.csv, run.json.

A run directory is complete or absent: everything is written into a hidden sibling directory and
renamed into place in one step at the end, so a reader (or a scheduled job that died) never leaves
a half-written GeoPackage where a good one was.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.errors import OutputError

log = logging.getLogger(__name__)

GPKG = "footprints.gpkg"
SUMMARY = "yearly_summary.csv"
MANIFEST = "run.json"


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


@contextmanager
def staged_run_dir(out: str | Path):
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file: pass a directory path with --out")
    if out.is_dir() and any(out.iterdir()) and not is_run_dir(out):
        raise OutputError(f"output dir {out} holds other files and is not a run dir: choose an empty or new --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise OutputError(f"cannot create the output dir beside {out} ({e.strerror}): check the path and permissions") from None
    try:
        yield tmp
        old = out.parent / f".{out.name}.previous-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = "free disk space" if e.errno == errno.ENOSPC else "check the path and permissions"
        raise OutputError(f"could not write the run to {out} ({e.strerror or e}): {hint}; the previous run is untouched") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_footprints(path: Path, layers: dict[str, gpd.GeoDataFrame]) -> None:
    for name, gdf in layers.items():
        gdf.to_file(path, layer=name, driver="GPKG", engine="pyogrio")


def write_summary(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False, lineterminator="\n")


def write_manifest(path: Path, manifest: dict, outputs: list[Path]) -> None:
    manifest = {**manifest, "outputs": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in outputs}}
    path.write_text(json.dumps(manifest, indent=1, default=str, sort_keys=False) + "\n")
