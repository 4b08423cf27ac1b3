"""The onset stage: the stores' monthly counts -> per-pixel onset maps of ponds and clearings with their
evidence, block by block, and the DEM's slope beside them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from pipeline import confidence, count, store, terrain
from pipeline.change import dip_onset, persistent_onset, share_while_active
from pipeline.sources.loading import load_dem


class Mosaic:
    """Blocks (dicts of arrays, axes ending in y, x) placed one by one into arrays on the whole grid of
    ``shape``."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.arrays: dict[str, np.ndarray] = {}

    def place(self, block: dict[str, np.ndarray], rows: tuple[int, int], cols: tuple[int, int]) -> None:
        (r0, r1), (c0, c1) = rows, cols
        for name, a in block.items():
            if name not in self.arrays:
                self.arrays[name] = np.empty((*a.shape[:-2], *self.shape), a.dtype)
            self.arrays[name][..., r0:r1, c0:c1] = a


def month_years(months) -> np.ndarray:
    """The calendar year of each month (a DatetimeIndex or datetime64 values)."""
    return np.asarray(pd.DatetimeIndex(months).year, dtype=np.int64)


def change_arrays(layers: dict[str, np.ndarray], scales: dict[str, float], years_of_months: np.ndarray, ch):
    """Monthly counts (``count.COUNT_LAYERS``, dims month, y, x, as ``store.read_layers`` gives them;
    ``scales``: what one unit of each index sum is worth) -> the pond and the clearing onset maps with
    their evidence (name -> (y, x) array), and the clear views per year (year, y, x). On numpy: the
    onset stage's threads had spent a third of their time building and merging xarray objects."""
    last = {k: np.moveaxis(v, 0, -1) for k, v in layers.items()}  # views: the kernels take months last
    valid = last["valid"]

    def onsets(hits, window):
        onset, end, seen = persistent_onset(valid, hits, window, ch.persistence, ch.min_observations)
        return {"onset": onset, "last": end, "months_seen": seen}

    def evidence(maps, hits, sums):
        return confidence.evidence(
            maps["onset"],
            maps["last"],
            valid,
            hits,
            {name: (last[f"{name}_sum"], scales[f"{name}_sum"]) for name in sums},
        )

    ponds = onsets(last["pond"], ch.pond_window_months)
    bare = onsets(last["bare"], ch.clearing_window_months)
    bare["bare_share"] = share_while_active(bare["onset"], bare["last"], valid, last["bare"])
    bare["green_share"] = share_while_active(bare["onset"], bare["last"], valid, last["green"])
    # where the canopy went and stayed gone: the edge pixels of a clearing, half laterite and half
    # forest, are rarely bare by the rules but stop being green when the hillside is cut
    bare["open_onset"] = onsets(valid - last["green"], ch.clearing_window_months)["onset"]
    bare["dip_onset"] = dip_onset(
        bare["onset"], valid, last["ndvi_sum"], ch.clearing_lead_months, ch.clearing_ndvi_drop / scales["ndvi_sum"]
    )
    ponds.update(evidence(ponds, last["pond"], ("mndwi", "ndvi")))
    # over the whole record, not an onset's span: a river's mixed edge pixels show water in a share of
    # their views without reaching the majority a pond's onset needs, and they join its pieces into one
    with np.errstate(invalid="ignore", divide="ignore"):
        ponds["water_share_all"] = (
            layers["pond"].sum(axis=0, dtype=np.int32) / layers["valid"].sum(axis=0, dtype=np.int32)
        ).astype(np.float32)
    bare.update(evidence(bare, None, ("bsi", "ndvi")))
    yearly = np.stack(
        [layers["valid"][years_of_months == year].sum(axis=0, dtype=np.int16) for year in np.unique(years_of_months)]
    )
    return ponds, bare, yearly


def _change_block(sources, years_of_months, rows, cols, ch, scratch: count.Scratch):
    """One block's ``change_arrays``, read from the stores' layers (``store.read_layers``)."""
    ponds, bare, yearly = change_arrays(
        store.read_layers(sources, rows, cols, scratch), store.STORED_SCALES, years_of_months, ch
    )
    return ponds, bare, {"valid": yearly}


def dem_and_slope(items, grid, resolution_m: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The DEM on ``grid`` (``load_dem``) and its slope in degrees, or (None, None) without DEM tiles."""
    dem = load_dem(items, grid)
    return dem, None if dem is None else terrain.slope_degrees(dem, resolution_m)


@dataclass
class OnsetMaps:
    """The onset stage's maps on the AOI grid: the pond and the clearing onsets with their evidence
    (name -> (y, x) array), the clear views per year ((year, y, x), ``years``), the DEM and its slope (None
    without DEM tiles)."""

    ponds: dict[str, np.ndarray]
    bare: dict[str, np.ndarray]
    yearly_valid: np.ndarray
    years: np.ndarray
    dem: np.ndarray | None
    slope: np.ndarray | None


def onset_stage(
    stores: list[tuple[Path | None, int]],
    months,
    shape: tuple[int, int],
    block_px: int,
    ch,
    dem_items,
    grid,
    resolution_m: float,
) -> OnsetMaps:
    """The onset maps from consecutive years' ``stores`` (``count.CountedYears.stores``) over ``months``:
    one task per block of ``block_px`` reads all months of the block (which lines up with the stored
    chunks, so each is read once) and derives everything from them, so only one block's record per thread
    is in memory, whatever the period. The DEM is read, warped and its slope worked out as one more task."""
    sources = [(None if path is None else store.open_layers(path), n) for path, n in stores]
    ny, nx = shape
    spans = lambda n: [(a, min(a + block_px, n)) for a in range(0, n, block_px)]  # noqa: E731
    years_of_months = month_years(months)
    scratch = count.Scratch()
    tasks = {
        (rows, cols): dask.delayed(_change_block, pure=True)(sources, years_of_months, rows, cols, ch, scratch)
        for rows in spans(ny)
        for cols in spans(nx)
    }
    blocks, (dem, slope) = dask.compute(tasks, dask.delayed(dem_and_slope, pure=True)(dem_items, grid, resolution_m))
    mosaics = [Mosaic(shape) for _ in range(3)]
    for span, block in blocks.items():
        for m, r in zip(mosaics, block):
            m.place(r, *span)
    return OnsetMaps(
        mosaics[0].arrays, mosaics[1].arrays, mosaics[2].arrays["valid"], np.unique(years_of_months), dem, slope
    )
