"""Persisted monthly composites (Zarr), one store per AOI grid and year.

Counting a year of scenes is the expensive part of a run; the result is small (four byte counts and
three int16 index sums per pixel and month). Keeping it on disk bounds memory (a run never holds more
than one year's counts) and lets a re-run, or a monthly run, reuse every year whose scenes and
classification settings have not changed. A store is valid only if its recorded key matches, it reads
back whole, and every file matches the checksum in its completion marker (``<store>.complete.json``
beside it, written only once the store is renamed into place): a store from an interrupted write, one
damaged on disk since, or one from other settings is recomputed, never trusted. A run that keeps no
composites writes its stores in its scratch directory, removed when it ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.core.buffer.cpu import NDBuffer

log = logging.getLogger(__name__)

# the layers of a store, a year of monthly counts: clear, pond-like, bare and green views, and the sums
# of each index over the clear views
COUNTS = ("valid", "pond", "bare", "green")
INDEX_SUMS = ("mndwi_sum", "ndvi_sum", "bsi_sum")
COUNT_LAYERS = (*COUNTS, *INDEX_SUMS)
# with outputs.evidence: the mean reflectance of the clear views of the year's dry-season months, of the
# bands the count reads anyway, for the true- and false-colour composites, as a byte: 1 + reflectance x
# REFL_CODES (0 to 0.5 in steps of 0.002, finer than a picture shows), 0 for no clear view
EVIDENCE_BANDS = ("blue", "green", "red", "nir", "swir16")
EVIDENCE_LAYERS = tuple(f"refl_{b}" for b in EVIDENCE_BANDS)
REFL_CODES = 508


class Scratch:
    """Work arrays each thread of a stage reuses from one task to the next, not allocated afresh: the
    kernel zeroes every fresh page a task touches, which on the bench AOI had been a tenth of the run's
    CPU, now 3% (perf, ``clear_page``). ``array`` gives a thread the same memory each time it asks for a
    name, uninitialised, so what it returns is only good until that thread asks again. Pickled (to a
    dask.distributed worker), it starts empty."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, str], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        key = (threading.get_ident(), name)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self._buffers[key] = np.empty(nbytes, np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)

    def __getstate__(self):
        return {"_buffers": {}}


try:  # zarr's codec pipeline in Rust: the stores read and write faster (make bench); optional
    import zarrs  # noqa: F401

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
except ImportError:  # pragma: no cover - the pure-Python pipeline reads and writes the same stores
    pass


COMPOSITE_VERSION = 5  # bump when the counting logic or layout changes (2: index sums; 3: 512 px LZ4 chunks;
#                        4: written block by block, zero fill, CRC-32 checksums; 5: uint8 counts, int16 sums,
#                        one shard per count block)
# Stored compactly: a month's count fits a byte (the tiles of a solar day are fused into one view, so a
# pixel has at most 31 views a month; 255 is clamped all the same), and an index sum is kept to a
# thousandth of an index unit as int16 (|sum| < 32.7,
# ~30 clear views at the index's extreme). That is half the bytes of int16 counts and float32 sums to
# compress, write and read back, which were a quarter of a run (make bench); a mean over the months a
# feature is active moves by less than 0.0005.
SUM_SCALE = 1000
STORED_COUNT, STORED_SUM = np.uint8, np.int16
STORED_SCALES = dict.fromkeys(INDEX_SUMS, 1 / SUM_SCALE)  # what one stored unit of each index sum is worth
STORED_DTYPES = {**dict.fromkeys(COUNTS, STORED_COUNT), **dict.fromkeys(INDEX_SUMS, STORED_SUM)}  # layer -> type
MARKER = ".complete.json"  # suffix of the marker file beside each store
ORPHAN_AGE_S = 3600


def _file_digests(root: Path) -> dict[str, str]:
    """CRC-32 of every file: it catches a file damaged or cut short on disk (SHA-256 cost a tenth of
    the count stage and guards against nothing more here), computed in threads (zlib drops the GIL)."""
    files = sorted(f for f in root.rglob("*") if f.is_file())
    with ThreadPoolExecutor(4) as pool:
        crcs = pool.map(lambda f: f"{zlib.crc32(f.read_bytes()):08x}", files)
    return {f.relative_to(root).as_posix(): c for f, c in zip(files, crcs)}


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
    if marker.get("files") is None:
        return "committed without checksums (a run's scratch store)"
    if marker.get("files") != _file_digests(p):
        return "files differ from their checksums"
    return None


def composite_key(grid, scene_ids: list[str], settings: dict) -> str:
    """A digest of everything a year's monthly counts depend on."""
    doc = {
        "v": COMPOSITE_VERSION,
        "crs": str(grid.crs),
        "transform": list(grid.affine)[:6],
        "shape": list(grid.shape.yx),
        "scenes": sorted(scene_ids),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


class CompositeStore:
    def __init__(self, root: Path, checksums: bool = True):
        """Stores under ``root``. Without ``checksums``, for a run's scratch stores (removed with the run,
        never reused): their files are not read back to be summed at ``commit``, and a store committed so
        is never trusted by ``load``."""
        self.root = Path(root)
        self.checksums = checksums

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
            group = zarr.open_group(p, mode="r")
            ok = group.attrs.get("key") == key and all(
                getattr(group[name], "shape", None) == (months, *shape) for name in COUNT_LAYERS
            )
        except Exception as e:  # noqa: BLE001 - any unreadable store is recomputed
            log.warning("composite store %s unreadable (%s): recomputing", p, e)
            ok = False
        if not ok:
            shutil.rmtree(p, ignore_errors=True)
            return None
        return p

    def save(
        self, year: int, key: str, months, y, x, chunk_px: int, shard_px: int, fill: Callable[[Path], None]
    ) -> Path:
        """Make ``year``'s store: ``begin``, ``fill(path)`` to write its blocks, ``commit``; returns its path."""
        tmp = self.begin(year, key, months, y, x, chunk_px, shard_px)
        try:
            fill(tmp)
        except BaseException:
            self.abort(tmp)
            raise
        return self.commit(year, key, tmp)

    def begin(self, year: int, key: str, months, y, x, chunk_px: int, shard_px: int, evidence: bool = False) -> Path:
        """A scratch store for ``year`` with its layers (``create_layers``: zeros) to write blocks into."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{self.path(year, key).name}.{uuid.uuid4().hex[:8]}.tmp"
        create_layers(tmp, months, y, x, chunk_px, shard_px, {"key": key, "year": year}, evidence)
        return tmp

    @staticmethod
    def abort(tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def commit(self, year: int, key: str, tmp: Path) -> Path:
        """Seal a written scratch store (checksums) and move it into place atomically; returns its path."""
        final = self.path(year, key)
        files = _file_digests(tmp) if self.checksums else None
        marker_path(final).unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        # the marker last, itself renamed into place: a kill before this leaves a store never trusted
        part = marker_path(tmp)
        part.write_text(json.dumps({"key": key, "year": year, "files": files}))
        part.replace(marker_path(final))
        for stale in self.root.glob(f"monthly-{year}-*{final.suffix}"):
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
                marker_path(stale).unlink(missing_ok=True)
        # half-written stores of killed runs (an hour old: not another run's write in progress)
        for orphan in self.root.glob(f".monthly-{year}-*.tmp*"):
            if time.time() - orphan.stat().st_mtime > ORPHAN_AGE_S:
                shutil.rmtree(orphan, ignore_errors=True) if orphan.is_dir() else orphan.unlink(missing_ok=True)
        return final


def create_layers(path: Path, months, y, x, chunk_px: int, shard_px: int, attrs: dict, evidence: bool = False) -> None:
    """An empty store of the count layers (``count.COUNT_LAYERS``, dims month, y, x; counts as
    ``STORED_COUNT``, sums as ``STORED_SUM`` thousandths) on the grid of coordinates ``y`` and ``x``:
    metadata only; every chunk reads as zero until ``write_block`` writes it. Chunks of one month x
    ``chunk_px`` x ``chunk_px`` (what the onset stage reads) are gathered in shards of ``shard_px`` (one
    count task's block), so a task writes one file per layer and month, not one per chunk: making
    thousands of small files cost the file system a tenth of a run (perf, make bench). The coordinates
    are written as xarray writes them (``xr.open_zarr`` reads the store as a Dataset), but with zarr
    itself: xarray's first write of a run cost a fifth of a second of setting up."""
    if shard_px % chunk_px:
        raise ValueError(f"shards of {shard_px} px do not hold whole chunks of {chunk_px} px")
    group = zarr.open_group(path, mode="w", attributes=attrs)
    days = (np.asarray(months, "datetime64[D]") - np.datetime64("1970-01-01", "D")).astype(np.int64)
    coords: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("month", days, {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"}),
        ("y", np.asarray(y, np.float64), {}),
        ("x", np.asarray(x, np.float64), {}),
    ]
    for name, values, cf in coords:
        coord = group.create_array(
            name, shape=values.shape, dtype=values.dtype, dimension_names=(name,), attributes=cf, fill_value=None
        )
        coord[:] = values
    # LZ4: reads and writes 2-3x faster than zarr's default zstd, which made reading the stores the
    # onset stage's cost. The index sums are bit-shuffled first (they compress 1.9x, not 1.4x); the byte
    # counts are not: they are mostly runs LZ4 finds alone (the store grows 2%), and blosc bit-shuffles
    # single bytes without SIMD, which had been a fifth of reading the stores back (perf, make bench)
    codecs = {
        STORED_COUNT: BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle"),
        STORED_SUM: BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle"),
    }
    # a shard no larger than the grid (in whole chunks): zarr fills a shard the grid ends inside
    # with zeros before writing a block into it, and stores its chunks beyond the grid too
    shards = [min(shard_px, -(-n // chunk_px) * chunk_px) for n in (len(y), len(x))]
    for name in COUNT_LAYERS + (EVIDENCE_LAYERS if evidence else ()):
        # flat file names ("0.1.2"): zarr 3's default nests a directory per index
        dtype = STORED_SUM if name in INDEX_SUMS else STORED_COUNT
        group.create_array(
            name,
            # the evidence: one dry season a year, not a month axis
            shape=(1 if name in EVIDENCE_LAYERS else len(months), len(y), len(x)),
            chunks=(1, chunk_px, chunk_px),
            shards=(1, *shards),
            dtype=dtype,
            compressors=[codecs[dtype]],
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "."},
            dimension_names=("season" if name in EVIDENCE_LAYERS else "month", "y", "x"),
            attributes={"scale_factor": 1 / SUM_SCALE} if dtype == STORED_SUM else {},
        )  # xarray decodes it


@numba.njit(nogil=True, cache=True)
def _pack(counts, sums, scale, packed_counts, packed_sums):
    for k in range(counts.shape[0]):
        for i in range(counts.shape[1]):
            for j in range(counts.shape[2]):
                packed_counts[k, i, j] = min(counts[k, i, j], 255)
    for k in range(sums.shape[0]):
        for i in range(sums.shape[1]):
            for j in range(sums.shape[2]):
                packed_sums[k, i, j] = min(max(np.rint(sums[k, i, j] * scale), -32767), 32767)


def stored_layers(counts: np.ndarray, sums: np.ndarray, scratch: Scratch | None = None) -> list[np.ndarray]:
    """A block's ``counts`` (int16, never negative) and ``sums`` (float32) as stored, layer by layer
    (``SUM_SCALE``): one compiled pass, not the four of numpy's clip and rint, which cost as much as
    compressing them. With ``scratch``, in the thread's arrays of it."""
    scratch = scratch or Scratch()
    packed_counts = scratch.array("packed_counts", counts.shape, STORED_COUNT)
    packed_sums = scratch.array("packed_sums", sums.shape, STORED_SUM)
    _pack(counts, sums, np.float32(SUM_SCALE), packed_counts, packed_sums)
    return [*packed_counts, *packed_sums]


def load_kernel() -> None:
    """Have numba load ``_pack`` (from its cache, or compile it) for the types ``write_block`` passes."""
    stored_layers(np.zeros((4, 1, 1), np.int16), np.zeros((3, 1, 1), np.float32))


Layers = dict[str, zarr.Array]  # a store's count layers, opened: name -> array


def open_layers(path: Path, write: bool = False) -> Layers:
    """The count layers of the store at ``path``, opened once per stage and handed to its tasks: opening
    parses the metadata and builds the codec pipeline, which per block had been a third of reading. For
    writing, blocks are encoded in the calling thread: the count stage runs a task per core already, and
    zarrs' own threads beside them only take turns with the other tasks."""
    names = [*COUNT_LAYERS, *(n for n in EVIDENCE_LAYERS if (Path(path) / n).is_dir())]
    if not write:
        return {name: zarr.open_array(f"{path}/{name}", mode="r") for name in names}
    with zarr.config.set({"threading.max_workers": 1}):
        return {
            name: zarr.open_array(f"{path}/{name}", mode="r+").with_config({"write_empty_chunks": True})
            for name in names
        }


def write_block(
    layers: Layers,
    month: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
    counts: np.ndarray,
    sums: np.ndarray,
    scratch: Scratch | None = None,
) -> None:
    """Write one month's ``counts`` (int16 [4, h, w]) and ``sums`` (float32 [3, h, w]) on ``rows`` x
    ``cols`` into a store's ``layers`` (``open_layers(path, write=True)``). Blocks must cover whole shards
    (or reach the grid's edge), so tasks writing different blocks never touch the same file."""
    (r0, r1), (c0, c1) = rows, cols
    for name, layer in zip(COUNT_LAYERS, stored_layers(counts, sums, scratch)):
        # every chunk is written: testing each for all-zero first (zarr's default) cost more than
        # compressing it, which shrinks an all-zero chunk to a few bytes anyway. A slice of one month,
        # not an integer index, which zarrs would hand back to zarr's slower Python pipeline.
        layers[name][month : month + 1, r0:r1, c0:c1] = layer[None]


def write_evidence(layers: Layers, rows: tuple[int, int], cols: tuple[int, int], codes: np.ndarray) -> None:
    """Write a block's dry-season mean reflectance (uint8 codes [5, h, w], ``EVIDENCE_LAYERS``)."""
    (r0, r1), (c0, c1) = rows, cols
    for name, layer in zip(EVIDENCE_LAYERS, codes):
        layers[name][0:1, r0:r1, c0:c1] = layer[None]


def read_layers(
    sources: list[tuple[Layers | None, int]],
    rows: tuple[int, int],
    cols: tuple[int, int],
    scratch: Scratch | None = None,
) -> dict[str, np.ndarray]:
    """Every layer of consecutive years' counts on one block (``rows`` x ``cols``), as stored (counts as
    bytes, index sums as int16 thousandths: ``SUM_SCALE``), dims (month, y, x). ``sources`` are each
    year's store layers (``open_layers``; None: no scene that year, all zeros) and its number of months,
    in order. Each year is read straight into its slice of the block's record, left narrow: widening it
    had been most of the onset stage's CPU (perf). With ``scratch``, into the thread's arrays of it (good
    until the thread's next block)."""
    (r0, r1), (c0, c1) = rows, cols
    scratch = scratch or Scratch()
    data = {}
    for name, stored in STORED_DTYPES.items():
        record = scratch.array(name, (sum(n for _, n in sources), r1 - r0, c1 - c0), stored)
        m = 0
        for layers, n in sources:
            if layers is None:
                record[m : m + n] = 0
            else:
                layers[name].get_basic_selection(
                    (slice(None), slice(r0, r1), slice(c0, c1)), out=NDBuffer.from_numpy_array(record[m : m + n])
                )
            m += n
        data[name] = record
    return data
