"""The orchestrator: the one place that knows the order of the stages.

Everything up to the onset maps is lazy (dask); one ``dask.compute`` turns the scene cube into a
handful of 2-D rasters, and the rest (vectorising, sites, the table, export) works on those.
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path

import dask
import dask.threaded
import numpy as np
import shapely
import xarray as xr

import pipeline
from pipeline import charts, classify, composite, confidence, export, indices, report, store, terrain
from pipeline.aoi import AOI, aoi_mask, load_aoi
from pipeline.change import dip_onset, lead_onset, month_to_year, persistent_onset, share_while_active, sum_scale
from pipeline.config import RunConfig
from pipeline.errors import NoScenesError, PipelineError
from pipeline.sources import find_scenes, make_source
from pipeline.sources.loading import BANDS_20M, SCL, load_dem, overpasses, solar_day, usable_scenes
from pipeline.summary import yearly_summary
from pipeline.vectorize import assign_sites, class_map, feature_table, grow_labels, label_features

log = logging.getLogger(__name__)

SCHEDULER_TIMEOUT_S = 15  # how long to wait for a dask.distributed scheduler to answer

PACKAGES = ["numpy", "xarray", "dask", "rasterio", "odc-stac", "odc-geo", "pystac", "geopandas", "shapely",
            "pyogrio", "pyproj", "scipy", "pydantic"]


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        log.info("stage %s ...", stage)
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - t0, 3)


# A progress factory, tqdm-like: ``progress(total=n, desc=..., unit=...)`` returns an object with
# ``update(n)`` and ``close()``. The CLI creates it (tqdm); library code only ticks it.
Progress = Callable[..., Any]


@contextmanager
def dask_progress(progress: Progress | None, desc: str):
    """Tick ``progress`` once per dask task finished by the local (threaded) scheduler."""
    if progress is None:
        yield
        return
    from dask.callbacks import Callback

    bar = progress(total=0, desc=desc, unit="task")

    class Ticks(Callback):
        def _start_state(self, dsk, state):
            bar.total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished") if k in state)
            if hasattr(bar, "refresh"):
                bar.refresh()

        def _posttask(self, key, result, dsk, state, worker_id):
            bar.update(1)

    try:
        with Ticks():
            yield
    finally:
        bar.close()


@dataclass
class RunResult:
    out: Path
    summary: "object"
    manifest: dict


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{pipeline.__version__}+{sha}" if sha else pipeline.__version__


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def classification_settings(cfg: RunConfig) -> dict:
    """The settings the monthly counts depend on (and nothing else), for the composite key."""
    return {"mask": cfg.mask.model_dump(), "bands": indices.BANDS,
            "pond": {k: getattr(cfg.ponds, k) for k in ("mndwi_min", "ndvi_max", "nir_max")},
            "clearing": {k: getattr(cfg.clearings, k) for k in ("ndvi_max", "bsi_min", "green_ndvi_min")}}


def count_tasks(cfg: RunConfig, aoi: AOI, scenes, start: date, end: date, path: Path,
                scratch: composite.Scratch | None = None) -> list:
    """Tasks (dask.delayed) that count the clear, pond-like, bare and green views of ``scenes`` in
    [start, end], and sum their indices, per month, into the store layers at ``path``."""
    rules = composite.observation_rules(cfg.mask, cfg.ponds, cfg.clearings)
    write = functools.partial(store.write_block, store.open_layers(path, write=True))
    return composite.count_tasks(write, path.name, overpasses(scenes, indices.BANDS), aoi.grid, start, end,
                                 cfg.compute.chunk_px, rules, scratch)


def detect(cfg: RunConfig, aoi: AOI, scenes, dem_items, timings: Timings, workdir: Path,
           progress: Progress | None = None) -> dict:
    """Scenes -> per-pixel onset maps (``ponds`` and ``bare``: name -> (y, x) array), clear views per year
    (``yearly_valid``: (year, y, x), ``years``), DEM and slope, all numpy on the AOI grid: a run builds no
    xarray object, whose first one makes xarray import dask.array (0.18 s of the interpreter's time).

    Year by year, so memory does not grow with the period: each year's scenes are counted into
    monthly composites persisted as Zarr (reused when nothing they depend on has changed), then the
    onsets are computed over all months from the stores, one spatial chunk at a time.
    """
    # the onset stage reads the stores in blocks of all months x a small area that line up with the
    # stored chunks, so each is read once and nothing is rechunked in memory
    n_months = len(composite.month_starts(cfg.period.start, cfg.period.end))
    edge = cfg.compute.onset_chunk_px(n_months)
    kept = cfg.compute.composite_dir is not None
    stores_at = store.CompositeStore(cfg.compute.composite_dir or workdir / "composites", checksums=kept)
    settings = classification_settings(cfg)
    reused, unreadable = [], []
    y, x = aoi.grid.coords["y"].values, aoi.grid.coords["x"].values
    years = {}  # year -> its first and last day in the period, its scenes
    for year in range(cfg.period.start.year, cfg.period.end.year + 1):
        y0, y1 = max(cfg.period.start, date(year, 1, 1)), min(cfg.period.end, date(year, 12, 31))
        years[year] = (y0, y1, [s for s in scenes if y0 <= date.fromisoformat(solar_day(s)) <= y1])
    stores: dict[int, Path | None] = {}
    while True:
        todo = {}  # year -> (key, its store being written)
        for year, (y0, y1, these) in years.items():
            if year in stores:
                continue
            if not these:  # no scene that year (or none readable): its months count zero
                stores[year] = None
                continue
            key = store.composite_key(aoi.grid, [s.id for s in these], settings)
            found = stores_at.load(year, key, len(composite.month_starts(y0, y1)), aoi.grid.shape.yx)
            if found is not None:
                stores[year] = found
                reused.append(year)
            else:
                todo[year] = (key, stores_at.begin(year, key, composite.month_starts(y0, y1), y, x,
                                               cfg.compute.store_chunk_px, cfg.compute.chunk_px))
        if not todo:
            break
        try:
            # every year's count tasks in one go: the two threads stay busy to the end of the last year,
            # not to the end of each
            log.info("counting the scenes of %s", ", ".join(map(str, todo)))
            with timings("count"), dask_progress(progress, "count"):
                scratch = composite.Scratch()  # one set of work arrays per thread for all years' tasks
                dask.compute([count_tasks(cfg, aoi, years[year][2], *years[year][:2], path, scratch)
                              for year, (_, path) in todo.items()])
        except Exception as e:  # noqa: BLE001 - a reader error from any scene: find which and go on
            for _, path in todo.values():
                stores_at.abort(path)
            if isinstance(e, OSError) and e.errno is not None:
                raise  # the disk, not a scene: let the caller report it
            good = {s.id for s in _drop_unreadable([s for year in todo for s in years[year][2]], unreadable, e)}
            years.update({year: (*years[year][:2], [s for s in years[year][2] if s.id in good]) for year in todo})
            continue
        for year, (key, path) in todo.items():
            stores[year] = stores_at.commit(year, key, path)
    per_year = [(None if stores[year] is None else store.open_layers(stores[year]), len(composite.month_starts(y0, y1))) for year, (y0, y1, _) in years.items()]
    used = [s for _, _, these in years.values() for s in these]
    if not used:
        first = unreadable[0] if unreadable else {"id": "-", "reason": "no scene"}
        raise NoScenesError(f"none of the {len(scenes)} scenes found can be read (first: {first['id']}: "
                            f"{first['reason']}): check or re-fetch the catalog files")
    months = composite.month_starts(cfg.period.start, cfg.period.end)
    ny, nx = aoi.grid.shape.yx
    spans = lambda n: [(a, min(a + edge, n)) for a in range(0, n, edge)]  # noqa: E731
    with timings("onsets"), dask_progress(progress, "onsets"):
        # one task per block reads the block's whole record and derives everything from it, so only
        # two blocks' records (one per thread) are ever in memory, whatever the period
        mosaics, scratch = [Mosaic((ny, nx)) for _ in range(3)], composite.Scratch()
        years_of_months = month_years(months)
        tasks = {(rows, cols): dask.delayed(_change_block, pure=True)(per_year, years_of_months, rows, cols,
                                                                      cfg.change, scratch)
                 for rows in spans(ny) for cols in spans(nx)}
        # the DEM is read, warped and its slope worked out as one more task, beside the blocks
        blocks, (dem, slope) = dask.compute(tasks, dask.delayed(dem_and_slope, pure=True)(dem_items, aoi.grid,
                                                                                        cfg.resolution))
        for span, block in blocks.items():
            for m, r in zip(mosaics, block):
                m.place(r, *span)
    days = sorted({solar_day(s) for s in used})
    return {"months": months, "ponds": mosaics[0].arrays, "bare": mosaics[1].arrays,
            "yearly_valid": mosaics[2].arrays["valid"], "years": np.unique(years_of_months), "dem": dem,
            "slope": slope, "n_days": len(days), "years_reused": reused, "scene_ids": [s.id for s in used],
            "unreadable": unreadable}


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
    import pandas as pd

    return np.asarray(pd.DatetimeIndex(months).year, dtype=np.int64)


def change_arrays(layers: dict[str, np.ndarray], scales: dict[str, float], years_of_months: np.ndarray, ch):
    """Monthly counts (``composite.COUNT_LAYERS``, dims month, y, x, as ``store.read_layers`` gives them;
    ``scales``: what one unit of each index sum is worth) -> the pond and the clearing onset maps with
    their evidence (name -> (y, x) array), and the clear views per year (year, y, x). On numpy: the
    onset stage's threads had spent a third of their time building and merging xarray objects."""
    last = {k: np.moveaxis(v, 0, -1) for k, v in layers.items()}  # views: the kernels take months last
    valid = last["valid"]

    def onsets(hits, window):
        onset, end, seen = persistent_onset(valid, hits, window, ch.persistence, ch.min_observations)
        return {"onset": onset, "last": end, "months_seen": seen}

    def evidence(maps, hits, sums):
        return confidence.evidence(maps["onset"], maps["last"], valid, hits,
                                   {name: (last[f"{name}_sum"], scales[f"{name}_sum"]) for name in sums})

    ponds = onsets(last["pond"], ch.pond_window_months)
    bare = onsets(last["bare"], ch.clearing_window_months)
    bare["bare_share"] = share_while_active(bare["onset"], bare["last"], valid, last["bare"])
    bare["green_share"] = share_while_active(bare["onset"], bare["last"], valid, last["green"])
    # where the canopy went and stayed gone: the edge pixels of a clearing, half laterite and half
    # forest, are rarely bare by the rules but stop being green when the hillside is cut
    bare["open_onset"] = onsets(valid - last["green"], ch.clearing_window_months)["onset"]
    bare["dip_onset"] = dip_onset(bare["onset"], valid, last["ndvi_sum"], ch.clearing_lead_months,
                                  ch.clearing_ndvi_drop / scales["ndvi_sum"])
    ponds.update(evidence(ponds, last["pond"], ("mndwi", "ndvi")))
    # over the whole record, not an onset's span: a river's mixed edge pixels show water in a share of
    # their views without reaching the majority a pond's onset needs, and they join its pieces into one
    with np.errstate(invalid="ignore", divide="ignore"):
        ponds["water_share_all"] = (layers["pond"].sum(axis=0, dtype=np.int32)
                                    / layers["valid"].sum(axis=0, dtype=np.int32)).astype(np.float32)
    bare.update(evidence(bare, None, ("bsi", "ndvi")))
    yearly = np.stack([layers["valid"][years_of_months == year].sum(axis=0, dtype=np.int16)
                       for year in np.unique(years_of_months)])
    return ponds, bare, yearly


def _as_xarray(ponds: dict, bare: dict, yearly: np.ndarray, years: np.ndarray, coords: dict):
    """``change_arrays``' maps as Datasets and the clear views per year as a DataArray, on ``coords``."""
    maps = lambda arrays: xr.Dataset({k: (("y", "x"), a) for k, a in arrays.items()}, coords=coords)  # noqa: E731
    return maps(ponds), maps(bare), xr.DataArray(yearly, dims=("year", "y", "x"), name="valid",
                                                 coords={"year": years, **coords})


def change_maps(monthly: xr.Dataset, ch) -> tuple[xr.Dataset, xr.Dataset, xr.DataArray]:
    """``change_arrays`` on a Dataset of monthly counts (dims month, y, x; the index sums as floats, or as
    stored with their CF ``scale_factor``): pond and clearing onset maps with their evidence, and the clear
    views per year."""
    years = month_years(monthly["month"].values)
    ponds, bare, yearly = change_arrays({k: monthly[k].values for k in composite.COUNT_LAYERS},
                                        {k: sum_scale(monthly[k]) for k in composite.INDEX_SUMS}, years, ch)
    coords = {k: c for k, c in monthly.coords.items() if "month" not in c.dims}
    return _as_xarray(ponds, bare, yearly, np.unique(years), coords)


def _change_block(sources, years_of_months, rows, cols, ch, scratch: composite.Scratch):
    """One block's ``change_arrays``, read from the stores' layers (``store.read_layers``)."""
    ponds, bare, yearly = change_arrays(store.read_layers(sources, rows, cols, scratch), store.STORED_SCALES,
                                        years_of_months, ch)
    return ponds, bare, {"valid": yearly}


def dem_and_slope(items, grid, resolution_m: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The DEM on ``grid`` (``load_dem``) and its slope in degrees, or (None, None) without DEM tiles."""
    dem = load_dem(items, grid)
    return dem, None if dem is None else terrain.slope_degrees(dem, resolution_m)


def _drop_unreadable(scenes, unreadable: list[dict], error: Exception) -> list:
    """After a failed load, probe each scene's files and keep those that read; re-raise if all do
    (then the failure was not a scene's)."""
    good, bad = usable_scenes(scenes, [*indices.BANDS, SCL], probe=True)
    if not bad:
        raise error
    unreadable.extend(bad)
    return good


def features(cfg: RunConfig, aoi: AOI, det: dict):
    """Onset rasters -> pond, clearing and site polygons."""
    inside = aoi_mask(aoi)
    months = det["months"]
    slope = det["slope"]

    keep = {"ponds": True, "bare": True}
    if cfg.classifier == "model":  # the trained pixel classifier filters the onset candidates
        from pipeline import train

        keep["ponds"], keep["bare"] = train.predict_masks(train.load(cfg.model_path),
                                                          train.pixel_features(det, slope, cfg.resolution))

    def layer(maps, with_slope, medians=(), only=True, grow_into=None, grow_px=0, dated=None, rasters=None):
        onset = maps["onset"]
        mask = (onset >= 0) & inside & only
        labels = label_features(mask)
        grown = grow_labels(labels, grow_into & inside, grow_px) if grow_into is not None and grow_px else None
        onset = onset if dated is None else dated
        table = feature_table(labels, aoi.grid, month_to_year(onset, months), month_to_year(maps["last"], months),
                              maps["months_seen"], slope if with_slope else None,
                              {**{k: maps[k] for k in medians}, **(rasters or {}),
                               "onset_month": onset.astype(np.float32), "last_month": maps["last"].astype(np.float32)},
                              grown)
        return table, labels

    open_, dated = None, None
    if "open_onset" in det["bare"]:
        open_ = det["bare"]["open_onset"]
        dated = clearing_dates(det["bare"], cfg.change.clearing_lead_months)
        open_ = open_ >= 0
    bare, labels = layer(det["bare"], True, ("bare_share", "green_share", *confidence.CLEARING_EVIDENCE), keep["bare"],
                         open_, cfg.clearings.grow_px, dated)
    bare["road"] = classify.road_cuts(labels, cfg.resolution, cfg.clearings)[bare["label"].to_numpy()]
    clearings = classify.select_clearings(bare, cfg.clearings, months)
    clearings = confidence.clearing_confidence(clearings, months, cfg.clearings)
    settings = classify.pond_settings(det["ponds"], slope, cfg.resolution, cfg.ponds)
    ponds = classify.select_ponds(layer(det["ponds"], False, confidence.POND_EVIDENCE, keep["ponds"],
                                        rasters=settings)[0], clearings, cfg.ponds)
    ponds = confidence.pond_confidence(ponds, months, cfg.ponds)
    ponds, clearings, sites = assign_sites(ponds, clearings, cfg.sites.linkage_m, cfg.sites.attach_m)
    sites = confidence.site_confidence(sites, ponds, clearings)
    evidence = list(confidence.COLUMNS)
    ponds = ponds[["pond_id", "first_year", "last_year", "months_seen", "area_m2", "site_id", *evidence,
                   "water_share", "mndwi_mean", "ndvi_mean", "geometry"]]
    clearings = clearings[["clearing_id", "first_year", "last_year", "months_seen", "area_m2", "mean_slope_deg",
                           "bare_share", "green_share", "elongation", "persistent", "provisional", "site_id", *evidence,
                           "bsi_mean", "ndvi_mean", "geometry"]]
    valid_per_year = {int(y): int(np.median(valid[inside])) for y, valid in zip(det["years"], det["yearly_valid"])}
    return ponds, clearings, sites, valid_per_year


@contextmanager
def dask_scheduler(compute):
    """Threads on this machine, or the dask.distributed cluster at ``compute.scheduler`` (or
    DASK_SCHEDULER_ADDRESS): everything computed inside goes there."""
    import os

    address = compute.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        # the threaded scheduler itself, not its name: given a name, dask imports dask.distributed to
        # look for a client first, a tenth of a second before the first task of a run
        with dask.config.set(scheduler=dask.threaded.get, num_workers=compute.workers):
            yield None
        return
    from distributed import Client

    try:
        client = Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise PipelineError(f"cannot reach the dask scheduler at {address} ({type(e).__name__}): start it, "
                            "or run without --scheduler / DASK_SCHEDULER_ADDRESS to use this machine") from None
    log.info("dask cluster %s, dashboard %s", address, client.dashboard_link)
    try:
        with client.as_current(), dask.config.set(scheduler=client):
            yield client
    except PipelineError:
        raise
    except Exception as e:
        lost = {"CancelledError", "FutureCancelledError", "CommClosedError", "StreamClosedError"}
        if client.status != "running" or lost & {t.__name__ for t in type(e).__mro__}:
            raise PipelineError(f"the dask scheduler at {address} stopped answering mid-run ({type(e).__name__}): "
                                "restart it and its workers, then run again; no output was replaced") from None
        raise
    finally:
        client.close()


def clearing_dates(bare, lead_months: int) -> np.ndarray:
    """Each clearing pixel's month of onset for dating: the bare onset, moved back to when the canopy went
    (no longer green, or its NDVI fell) if that came at most ``lead_months`` before."""
    dated = lead_onset(bare["onset"], bare["open_onset"], lead_months)
    if "dip_onset" in bare:
        dated = lead_onset(dated, bare["dip_onset"], lead_months)
    return dated


def feature_rasters(aoi: AOI, det: dict, ponds, clearings, lead_months: int = 0) -> dict:
    """The per-pixel view of the final features: class map, each pixel's own first year, and the
    clear-observation count per year (what an analyst checks before trusting a year)."""
    classes = class_map(aoi.grid, ponds, clearings)
    months = det["months"]
    pond_year = month_to_year(det["ponds"]["onset"], months)
    clear_year = month_to_year(det["bare"]["onset"], months)
    if "open_onset" in det["bare"]:  # a clearing's (and a grown edge pixel's) first month is when its canopy went
        open_onset = det["bare"]["open_onset"]
        clear_year = month_to_year(clearing_dates(det["bare"], lead_months), months)
        clear_year = np.where(clear_year >= 0, clear_year, month_to_year(open_onset, months))
    first_year = np.where(classes == 2, pond_year, np.where(classes == 1, clear_year, 0))
    return {"classes": classes, "first_year": np.clip(first_year, 0, None).astype(np.uint16),
            "valid_per_year": det["yearly_valid"].astype(np.uint16), "years": [int(y) for y in det["years"]]}


def plan(cfg: RunConfig) -> dict:
    """What a run would read, without reading pixels: the scenes found (and set aside by the cloud
    limit) and the volume of pixels to fetch for the AOI window (uncompressed; COG range reads fetch
    about that, compressed)."""
    aoi = load_aoi(cfg.aoi, cfg.resolution)
    source = make_source(cfg.source)
    found = source.search(aoi.geometry, cfg.period.start, cfg.period.end, cfg.source.max_cloud_cover)
    h, w = aoi.grid.shape.yx
    per_scene = pixel_bytes_per_scene(aoi.grid)
    scenes = [{"id": it.id, "datetime": str(it.datetime)[:19],
               "cloud_cover": it.properties.get("eo:cloud_cover")} for it in found.scenes]
    return {"aoi": cfg.name or aoi.name, "area_km2": round(aoi.area_km2, 2), "grid": f"{w} x {h} px",
            "crs": str(aoi.grid.crs), "period": [cfg.period.start.isoformat(), cfg.period.end.isoformat()],
            "source": source.name, "scenes": scenes, "skipped": found.skipped,
            "dem_items": [it.id for it in found.dem], "bands": [*indices.BANDS, SCL],
            "bytes_per_scene": per_scene, "bytes_total": per_scene * len(scenes), "out": str(cfg.out)}


# Above this many bytes of pixels to read, a run is more than a monthly job should take on: warn
# (the configured Chipwe/Pangwa AOI, ~1,700 km2, reads ~190 MB a scene, ~100 GB over 7 years).
HUGE_VOLUME_BYTES = 250e9


def pixel_bytes_per_scene(grid) -> int:
    """Bytes of pixels one scene contributes on ``grid``: uint16 reflectance, uint8 SCL, 20 m bands at 20 m."""
    h, w = grid.shape.yx
    return sum((h // 2) * (w // 2) * (1 if b == SCL else 2) if b in BANDS_20M else h * w * 2
               for b in [*indices.BANDS, SCL])


def _work_parent(out: Path) -> Path:
    """Scratch space beside the output (same disk), made if needed."""
    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def run(cfg: RunConfig, today: date | None = None, progress: Progress | None = None,
        fetch_progress=None) -> RunResult:
    """One configured run, end to end. ``progress`` is a tqdm-like factory for compute bars,
    ``fetch_progress`` the scene cache's download progress (both created by the CLI)."""
    timings = Timings()
    started = datetime.now(timezone.utc)
    warnings: list[str] = []
    with timings("aoi"):
        aoi = load_aoi(cfg.aoi, cfg.resolution)
    name = cfg.name or aoi.name
    with timings("search"):
        got = find_scenes(cfg, aoi, [*indices.BANDS, SCL], fetch_progress)
    found = got.search
    scenes, incomplete = usable_scenes(found.scenes, [*indices.BANDS, SCL], probe=False)
    if not scenes:
        raise NoScenesError(f"none of the {len(found.scenes)} scenes found has the assets needed "
                            f"(first: {incomplete[0]['id']}: {incomplete[0]['reason']}): check the catalog")
    volume = pixel_bytes_per_scene(aoi.grid) * len(scenes)
    if volume > HUGE_VOLUME_BYTES:
        warnings.append(f"huge AOI: {aoi.area_km2:,.0f} km2 x {len(scenes)} scenes is about {volume / 1e9:,.3g} GB of "
                        "pixels to read: expect a long run; a smaller AOI or a shorter period reads less")
        log.warning(warnings[-1])
    if not found.dem:
        warnings.append("no cop-dem-glo-30 item covers the AOI: slope unknown, the hillside rule was not applied")
    with dask_scheduler(cfg.compute) as client, \
            tempfile.TemporaryDirectory(prefix=f".{Path(cfg.out).name}.work-", suffix=f"-{os.getpid()}",
                                        dir=_work_parent(cfg.out)) as work:
        det = detect(cfg, aoi, scenes, found.dem, timings, Path(work), progress)
    with timings("vectorise"):
        ponds, clearings, sites, valid_per_year = features(cfg, aoi, det)
        rasters = feature_rasters(aoi, det, ponds, clearings, cfg.change.clearing_lead_months)
    years = list(range(cfg.period.start.year, cfg.period.end.year + 1))
    gaps = [y for y in years if valid_per_year.get(y, 0) == 0]
    if gaps:
        warnings.append(f"no clear observation in {gaps}: those years are gaps, not years without mining")
    table = yearly_summary(name, years, ponds, clearings, sites, valid_per_year, cfg.period.end, today)
    for w in warnings:
        log.warning(w)
    manifest = {
        "aoi": name, "created": started.isoformat(timespec="seconds"), "code_version": code_version(),
        "aoi_geometry": shapely.geometry.mapping(aoi.geometry),
        "config": cfg.model_dump(mode="json"),
        "grid": {"crs": str(aoi.grid.crs), "shape": list(aoi.grid.shape.yx), "transform": list(aoi.grid.affine)[:6]},
        "source": got.source, **({"fetch": got.fetch} if got.fetch is not None else {}),
        "scenes_used": det["scene_ids"], "n_scenes_used": len(det["scene_ids"]), "n_days": det["n_days"],
        "composite_years_reused": det["years_reused"],
        "scenes_skipped": [*found.skipped, *incomplete, *det["unreadable"]], "dem_items": [it.id for it in found.dem],
        "counts": {"sites": len(sites), "ponds": len(ponds), "clearings": len(clearings)},
        "warnings": warnings, "packages": package_versions(),
    }
    if cfg.classifier == "model":  # which model decided, exactly (its training data's hash)
        from pipeline import train

        b = train.load(cfg.model_path)
        manifest["model"] = {k: b[k] for k in ("path", "version", "sklearn", "training_data_sha256", "n_pixels",
                                               "features")}
    with timings("export"), export.staged_run_dir(cfg.out) as tmp:
        gpkg, csv = tmp / export.GPKG, tmp / export.SUMMARY
        export.write_summary(csv, table)
        # the charts are drawn while GDAL writes the files
        with ThreadPoolExecutor(2, thread_name_prefix="export") as pool:
            drawn = pool.submit(charts.draw, csv, name, tmp)
            written = pool.submit(export.write_rasters, tmp, aoi.grid, rasters["first_year"], rasters["classes"],
                                  rasters["valid_per_year"], rasters["years"])
            export.write_footprints(gpkg, {"ponds": ponds, "clearings": clearings, "sites": sites})
            export.write_layer_styles(gpkg, years)
            export.write_sld(tmp / export.STYLES_SLD, years)
            layers = report.page_layers(tmp)  # the page's map, while the rasters are written
            tifs, svgs = written.result(), drawn.result()
        manifest["timings_s"] = timings.seconds
        pages = report.write_report(tmp, manifest, svgs, layers, rasters["valid_per_year"])
        export.write_manifest(tmp / export.MANIFEST, manifest, [gpkg, csv, tmp / export.STYLES_SLD, *tifs, *pages])
    return RunResult(out=Path(cfg.out), summary=table, manifest=manifest)
