"""Persisted monthly composites (Zarr), one store per AOI grid and year.

Counting a year of scenes is the expensive part of a run; the result is small (four int16 layers
per month). Keeping it on disk bounds memory (a run never holds more than one year's counts) and
lets a re-run, or a monthly run, reuse every year whose scenes and classification settings have
not changed. A store is valid only if its recorded key matches and it reads back whole: a store
from an interrupted write (written to a temporary name, renamed at the end) or from other settings
is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path

import xarray as xr

log = logging.getLogger(__name__)

COMPOSITE_VERSION = 2  # bump when the counting logic changes (2: monthly index sums)


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

    def load(self, year: int, key: str, months: int, shape: tuple[int, int]) -> xr.Dataset | None:
        """The stored counts for ``year`` if they exist, match ``key`` and have the expected shape."""
        p = self.path(year, key)
        if not p.is_dir():
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
        return ds

    def save(self, year: int, key: str, counts: xr.Dataset) -> xr.Dataset:
        """Compute ``counts`` into the store (atomically) and return it opened lazily from disk."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(year, key)
        tmp = self.root / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        counts = counts.assign_attrs(key=key, year=year)
        for v in counts.data_vars.values():
            v.encoding.clear()
        counts.to_zarr(tmp, mode="w", consolidated=False)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for stale in self.root.glob(f"monthly-{year}-*.zarr"):
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
        return xr.open_zarr(final, consolidated=False)
