"""Writers for a run directory (contract 4): footprints.gpkg, yearly_summary.csv, run.json.

A run directory is complete or absent: everything is written into a hidden sibling directory and
renamed into place in one step at the end, so a reader (or a scheduled job that died) never leaves
a half-written GeoPackage where a good one was.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from pipeline import styles
from pipeline.errors import OutputError, PipelineError

log = logging.getLogger(__name__)

GPKG = "footprints.gpkg"
SUMMARY = "yearly_summary.csv"
MANIFEST = "run.json"
# written by ``python -m pipeline reference`` into a finished run dir, and listed in its run.json
REFERENCE_JSON = "reference.json"
REFERENCE_MD = "reference.md"


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


PREVIOUS_SUFFIX = ".previous"  # ``<out>.previous``: the last good run, while a new one is moved in
# Files a finished run dir may hold that run.json does not checksum: the log (moved in after the run
# dir is in place), evaluate's scores (written after the run), what ``export`` adds on request, and the
# STAC Item (``stac.ITEM``), which is made from run.json and carries its checksums.
UNLISTED = ("run.log", "scores.json", "exports", "item.json")


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE): a reader of either name sees
    the old or the new directory, never neither. False where the kernel or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(out: Path) -> None:
    """Undo what a killed run left beside ``out``: put back a previous run caught between its two
    renames, and remove the partial run dirs, logs and scratch of processes no longer alive."""
    out = Path(out)
    prev = out.parent / f".{out.name}{PREVIOUS_SUFFIX}"
    if prev.is_dir():
        if not out.exists() and is_run_dir(prev):
            log.warning("restoring the previous run %s (a run was stopped while replacing it)", out)
            os.replace(prev, out)
        else:
            shutil.rmtree(prev, ignore_errors=True)
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f".{out.name}.*-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            log.info("removing %s, left by a stopped run", p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


@contextmanager
def staged_run_dir(out: str | Path):
    """Yield a temporary directory beside ``out``; on success it replaces ``out`` atomically.

    The swap is one renameat2(RENAME_EXCHANGE) where the kernel has it: ``out`` is the old run or
    the new one at every instant. Elsewhere the old run is first renamed to ``.<out>.previous``,
    which ``recover`` (run at the start of every run) puts back if the process dies in between.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file: pass a directory path with --out")
    try:
        recover(out)
    except OSError as e:
        raise OutputError(f"cannot tidy up beside {out} ({e.strerror}): check the path and permissions") from None
    if out.is_dir() and any(out.iterdir()) and not is_run_dir(out):
        raise OutputError(f"output dir {out} holds other files and is not a run dir: choose an empty or new --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise OutputError(
            f"cannot create the output dir beside {out} ({e.strerror}): check the path and permissions"
        ) from None
    try:
        yield tmp
        _fsync_tree(tmp)
        if out.exists() and _rename_exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous run
        else:
            old = out.parent / f".{out.name}{PREVIOUS_SUFFIX}"
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(out.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = "free disk space" if disk_full(e) else "check the path and permissions"
        raise OutputError(
            f"could not write the run to {out} ({e.strerror or e}): {hint}; the previous run is untouched"
        ) from None
    except PipelineError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        full = disk_full(e, tmp)  # before the cleanup frees the space again
        shutil.rmtree(tmp, ignore_errors=True)
        if full:  # GDAL/SQLite writers report a full disk in their own words, or as a missing table
            raise OutputError(
                f"could not write the run to {out} (disk full, in {type(e).__name__}): "
                "free disk space; the previous run is untouched"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


FULL_BELOW_BYTES = 1 << 20  # a write that failed with less free than this failed for want of space


def disk_full(e: BaseException, where: Path | None = None) -> bool:
    """A full disk or quota, however the writer reported it (OSError, GDAL, SQLite: SQLite can fail
    to create its tables on a full disk and GDAL then reports only the missing table)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    if any(s in text for s in ("no space left", "disk is full", "disk full", "quota exceeded")):
        return True
    if where is not None:
        try:
            return shutil.disk_usage(where).free < FULL_BELOW_BYTES
        except OSError:
            return False
    return False


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a finished run's files to disk before it is renamed into place, so a power cut after
    the rename cannot leave a run dir whose files are empty."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def verify_run(run_dir: str | Path) -> dict:
    """Check a run dir against the checksums in its run.json. Returns ``{"ok": [...], "problems": [...]}``;
    each problem names a file and what is wrong with it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OutputError(f"{run_dir} does not exist: pass the --out of a finished run")
    manifest = read_manifest(run_dir)
    outputs = manifest.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise OutputError(f"{run_dir}/{MANIFEST} lists no output checksums: rerun the pipeline for this AOI")
    ok, problems = [], []
    for name in (GPKG, SUMMARY):
        if name not in outputs:
            problems.append(f"{name}: not listed in {MANIFEST}")
    for name, rec in outputs.items():
        p = run_dir / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif p.stat().st_size != rec.get("bytes"):
            problems.append(f"{name}: {p.stat().st_size} bytes, run.json says {rec.get('bytes')}")
        elif sha256(p) != rec.get("sha256"):
            problems.append(f"{name}: sha256 differs from run.json")
        else:
            ok.append(name)
    for p in sorted(run_dir.rglob("*")):
        name = p.relative_to(run_dir).as_posix()
        if p.is_dir() or name in outputs or name == MANIFEST or name.split("/")[0] in UNLISTED:
            continue
        problems.append(f"{name}: not listed in {MANIFEST}")
    return {"ok": ok, "problems": problems}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_footprints(path: Path, layers: dict[str, gpd.GeoDataFrame]) -> None:

    # without SQLite's flush to disk at every commit (half the time of the writes): a run dir is flushed
    # whole before it is swapped into place (``staged_run_dir``), and never read half-written
    before = pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS")
    pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": "OFF"})
    try:
        for name, gdf in layers.items():
            gdf.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_SQLITE_SYNCHRONOUS": before})


def write_summary(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False, lineterminator="\n")


CHANGES_CSV = "changes.csv"
CHANGES_GEOJSON = "changes.geojson"


def write_changes(out_dir: Path, changes: gpd.GeoDataFrame) -> list[Path]:
    """changes.csv (no geometry) and changes.geojson (lon/lat, RFC 7946) of what changed since the last run."""
    csv, geojson = out_dir / CHANGES_CSV, out_dir / CHANGES_GEOJSON
    pd.DataFrame(changes.drop(columns="geometry")).to_csv(csv, index=False, lineterminator="\n")
    changes.to_crs(4326).to_file(geojson, driver="GeoJSON", engine="pyogrio", layer_options={"RFC7946": "YES"})
    return [csv, geojson]


def write_atomic(path: Path, text: str) -> Path:
    """Write ``path`` through a temporary file renamed over it: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({e.strerror or e}): check the permissions and free space") from None
    return path


def write_json(path: Path, doc: dict) -> Path:
    """``doc`` as indented JSON, written as ``write_atomic`` writes."""
    return write_atomic(path, json.dumps(doc, indent=1) + "\n")


def write_manifest(path: Path, manifest: dict, outputs: list[Path]) -> None:
    root = path.parent
    manifest = {
        **manifest,
        "outputs": {p.relative_to(root).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in outputs},
    }
    path.write_text(json.dumps(manifest, indent=1, default=str, sort_keys=False) + "\n")


# --- the run's layers, as other tools want them ---------------------------------------------------

LAYERS = ("sites", "ponds", "clearings")  # drawing order: sites' outlines over the fills
STYLES_SLD = "footprints.sld"


def read_manifest(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / MANIFEST).read_text())
    except FileNotFoundError:
        raise OutputError(
            f"{run_dir} is not a run directory (no {MANIFEST}): pass the --out of a finished run"
        ) from None
    except ValueError as e:
        raise OutputError(f"{run_dir}/{MANIFEST} is not valid JSON ({e}): rerun the pipeline for this AOI") from None


def period_years(manifest: dict) -> list[int]:
    p = manifest["config"]["period"]
    return list(range(int(str(p["start"])[:4]), int(str(p["end"])[:4]) + 1))


def read_layers(run_dir: Path, layers=None, year: int | None = None) -> dict[str, gpd.GeoDataFrame]:
    """The run's layers (UTM), optionally only features first seen in or before ``year``."""
    gpkg = Path(run_dir) / GPKG
    if not gpkg.is_file():
        raise OutputError(f"{run_dir} has no {GPKG}: pass the --out of a finished run")
    layers = list(layers or LAYERS)
    unknown = [n for n in layers if n not in LAYERS]
    if unknown:
        raise OutputError(f"unknown layer {unknown[0]!r}: choose from {', '.join(LAYERS)}")
    out = {}
    for name in layers:
        gdf = gpd.read_file(gpkg, layer=name, engine="pyogrio")
        if year is not None:
            gdf = gdf[gdf["first_year"] <= year].reset_index(drop=True)
        out[name] = gdf
    return out


def write_layer_styles(gpkg: Path, years, layers=LAYERS) -> None:
    """Store a default QGIS style (QML, with its SLD) per layer in the GeoPackage's ``layer_styles``
    table, the table QGIS itself writes and reads: dragging the file into QGIS shows styled layers."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    con = sqlite3.connect(gpkg)
    try:
        # no flush to disk at the commit, as in write_footprints: a run dir is flushed whole before it is
        # swapped into place, and an export is rewritten from its run
        con.execute("PRAGMA synchronous = OFF")
        with con:
            con.execute(
                'CREATE TABLE IF NOT EXISTS "layer_styles" ("id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
                '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
                '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
                '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
                '"update_time" DATETIME)'
            )
            # registered as an attributes table, as QGIS does, so GDAL and QGIS list it
            con.execute(
                "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', ?)",
                (now,),
            )
            for name in layers:
                geom_col = con.execute(
                    "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (name,)
                ).fetchone()
                if geom_col is None:
                    continue
                con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (name,))
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, ?)",
                    (
                        name,
                        geom_col[0],
                        f"{name} by first year",
                        styles.qml(name, years),
                        styles.sld([name], years),
                        styles.LAYER_TITLES[name],
                        now,
                    ),
                )
    finally:
        con.close()


def write_sld(path: Path, years, layers=LAYERS) -> None:

    path.write_text(styles.sld(layers, years))


# --- rasters --------------------------------------------------------------------------------------

FIRST_YEAR_TIF = "first_year.tif"
CLASS_TIF = "class.tif"
VALID_TIF = "valid_observations.tif"
CLASSES = {0: "none", 1: "cleared slope", 2: "collection pond"}


def write_cog(
    path: Path, data, grid, nodata=None, descriptions=None, tags=None, colormap=None, resampling: str = "NEAREST"
) -> None:
    """A Cloud-Optimised GeoTIFF on ``grid``: deflate, 256 px tiles, and overviews halving down to about
    128 px (at least one level, so even a small AOI opens in QGIS the way a large one does). Deflate at
    level 1, not GDAL's 6: less than half the time for files a quarter larger, which every GIS reads.

    The overviews are built in the in-memory GeoTIFF and copied as they are: left to the COG driver,
    they go through a ZSTD-compressed temporary file beside the output, with a new compressor for every
    tile, and writing took nearly twice as long."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype,
        "crs": grid.crs.to_wkt(),
        "transform": grid.affine,
        "nodata": nodata,
    }
    levels = max(1, math.ceil(math.log2(max(data.shape[1:]) / 128)))
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
            for i, d in enumerate(descriptions or [], start=1):
                ds.set_band_description(i, d)
            if tags:
                ds.update_tags(**tags)
            if colormap:
                ds.write_colormap(1, colormap)
            ds.build_overviews([2**k for k in range(1, levels + 1)], Resampling[resampling.lower()])
        with mem.open() as src:
            rasterio.shutil.copy(
                src,
                path,
                driver="COG",
                COMPRESS="DEFLATE",
                LEVEL=1,
                BLOCKSIZE=256,
                OVERVIEWS="FORCE_USE_EXISTING",
                PREDICTOR="YES",
            )


def write_rasters(out_dir: Path, grid, first_year, classes, valid_per_year, years) -> list[Path]:
    """The per-pixel outputs: first year (0 = none), class map, clear observations per year (a band each),
    written side by side (GDAL compresses each off the GIL)."""
    pond, clear = styles.POND_OUTLINE, "#a0522d"
    cmap = {0: (0, 0, 0, 0), 1: (*styles._hex_to_rgb(clear), 255), 2: (*styles._hex_to_rgb(pond), 255)}
    files: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        FIRST_YEAR_TIF: (
            np.asarray(first_year, np.uint16),
            dict(
                nodata=0,
                descriptions=["first_year"],
                tags={
                    "meaning": "calendar year of the pixel's first month as a pond or cleared slope, "
                    "within the run's ponds and clearings; 0 = none"
                },
            ),
        ),
        CLASS_TIF: (
            np.asarray(classes, np.uint8),
            dict(
                nodata=None, descriptions=["class"], tags={f"class_{k}": v for k, v in CLASSES.items()}, colormap=cmap
            ),
        ),
        VALID_TIF: (
            np.asarray(valid_per_year, np.uint16),
            dict(
                nodata=None,
                descriptions=[str(y) for y in years],
                resampling="AVERAGE",
                tags={
                    "meaning": "clear (cloud-free, valid) Sentinel-2 observations of the pixel in each year, "
                    "one band per year"
                },
            ),
        ),
    }
    with ThreadPoolExecutor(len(files), thread_name_prefix="cog") as pool:
        done = [pool.submit(write_cog, out_dir / name, data, grid, **kw) for name, (data, kw) in files.items()]
        for d in done:
            d.result()
    return [out_dir / name for name in files]
