"""Persisted monthly composites (Zarr), one store per AOI grid and year.

Counting a year of scenes is the expensive part of a run; the result is small (four int16 layers
per month). Keeping it on disk bounds memory (a run never holds more than one year's counts) and
lets a re-run, or a monthly run, reuse every year whose scenes and classification settings have
not changed. A store is valid only if its recorded key matches, it reads back whole, and every
file matches the checksum in its completion marker (``<store>.complete.json`` beside it, written
only once the store is renamed into place): a store from an interrupted write, one damaged on disk since, or one
from other settings is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)

COMPOSITE_VERSION = 3  # bump when the counting logic or layout changes (2: index sums; 3: 512 px LZ4 chunks)
MARKER = ".complete.json"  # suffix of the marker file beside each store
ORPHAN_AGE_S = 3600


def _file_digests(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def marker_path(p: Path) -> Path:
    return p.with_name(p.name + MARKER)


def _complete(p: Path, key: str) -> str | None:
    """Why the store at ``p`` cannot be trusted, or None."""
    try:
        marker = json.loads(marker_path(p).read_text())
    except FileNotFoundError:
        return "no completion marker (an interrupted write)"
    except ValueError:
        return "completion marker unreadable"
    if marker.get("key") != key:
        return "completion marker of another key"
    if marker.get("files") != _file_digests(p):
        return "files differ from their checksums"
    return None


def composite_key(grid, scene_ids: list[str], settings: dict) -> str:
    """A digest of everything a year's monthly counts depend on."""
    doc = {"v": COMPOSITE_VERSION, "crs": str(grid.crs), "transform": list(grid.affine)[:6],
           "shape": list(grid.shape.yx), "scenes": sorted(scene_ids), "settings": settings}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


class CompositeStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, year: int, key: str) -> Path:
        return self.root / f"monthly-{year}-{key}.zarr"

    def load(self, year: int, key: str, months: int, shape: tuple[int, int]) -> Path | None:
        """The store of ``year``'s counts if it exists, matches ``key`` and has the expected shape."""
        p = self.path(year, key)
        if not p.is_dir():
            return None
        why = _complete(p, key)
        if why:
            log.warning("composite store %s not trusted (%s): recomputing", p, why)
            shutil.rmtree(p, ignore_errors=True)
            marker_path(p).unlink(missing_ok=True)
            return None
        try:
            ds = xr.open_zarr(p, consolidated=False)
            ok = ds.attrs.get("key") == key and ds.sizes.get("month") == months and \
                (ds.sizes.get("y"), ds.sizes.get("x")) == tuple(shape)
        except Exception as e:  # noqa: BLE001 - any unreadable store is recomputed
            log.warning("composite store %s unreadable (%s): recomputing", p, e)
            ok = False
        if not ok:
            shutil.rmtree(p, ignore_errors=True)
            return None
        return p

    def save(self, year: int, key: str, counts: xr.Dataset, chunk_px: int) -> Path:
        """Compute ``counts`` into the store (atomically) in chunks of one month x ``chunk_px`` x
        ``chunk_px``; returns its path."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(year, key)
        tmp = self.root / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        counts = counts.assign_attrs(key=key, year=year)
        for v in counts.data_vars.values():
            v.encoding.clear()
        # LZ4 with bit-shuffling: counts are small integers and compress 2-3x; this reads and writes
        # 2-3x faster than zarr's default zstd, which made reading the stores the onset stage's cost
        codec = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
        # flat chunk file names ("0.1.2"): zarr 3's default nests a directory per index, and making
        # those directories was a tenth of a run's work (py-spy, make bench)
        keys = {"name": "v2", "separator": "."}
        encoding = {k: {"compressors": [codec], "chunks": (1, chunk_px, chunk_px), "chunk_key_encoding": keys}
                    for k in counts.data_vars}
        counts.to_zarr(tmp, mode="w", consolidated=False, encoding=encoding)
        files = _file_digests(tmp)
        marker_path(final).unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        # the marker last, itself renamed into place: a kill before this leaves a store never trusted
        part = marker_path(tmp)
        part.write_text(json.dumps({"key": key, "year": year, "files": files}))
        part.replace(marker_path(final))
        for stale in self.root.glob(f"monthly-{year}-*.zarr"):
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
                marker_path(stale).unlink(missing_ok=True)
        # half-written stores of killed runs (an hour old: not another run's write in progress)
        for orphan in self.root.glob(f".monthly-{year}-*.tmp*"):
            if time.time() - orphan.stat().st_mtime > ORPHAN_AGE_S:
                shutil.rmtree(orphan, ignore_errors=True) if orphan.is_dir() else orphan.unlink(missing_ok=True)
        return final


def read_record(sources: list[tuple[Path | None, int]], months, y, x, rows: tuple[int, int],
                cols: tuple[int, int]) -> xr.Dataset:
    """Every layer of consecutive years' counts on one block (``rows`` x ``cols`` of the grid whose
    coordinates are ``y`` and ``x``), as numpy (dims month, y, x). ``sources`` are each year's store
    (None: no scene that year, all zeros) and its number of months, in order. Each year is read
    straight into its slice of the block, so a block's record exists once in memory."""
    from pipeline.composite import COUNTS, INDEX_SUMS

    (r0, r1), (c0, c1) = rows, cols
    data = {}
    for name, dtype in [*((k, np.int16) for k in COUNTS), *((k, np.float32) for k in INDEX_SUMS)]:
        out = np.zeros((sum(n for _, n in sources), r1 - r0, c1 - c0), dtype)
        m = 0
        for path, n in sources:
            if path is not None:
                out[m:m + n] = zarr.open_array(f"{path}/{name}", mode="r")[:, r0:r1, c0:c1]
            m += n
        data[name] = (("month", "y", "x"), out)
    return xr.Dataset(data, coords={"month": months, "y": y[r0:r1], "x": x[c0:c1]})
