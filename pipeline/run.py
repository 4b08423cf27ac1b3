"""The orchestrator: the one place that knows the order of the stages.

Everything up to the onset maps is lazy (dask); one ``dask.compute`` turns the scene cube into a
handful of 2-D rasters, and the rest (vectorising, sites, the table, export) works on those.
"""
from __future__ import annotations

import logging
import platform
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path

import dask
import numpy as np
import shapely

import pipeline
from pipeline import classify, composite, export, indices, masking, report, terrain
from pipeline.aoi import AOI, aoi_mask, load_aoi
from pipeline.change import month_to_year, onset_maps, share_while_active_maps
from pipeline.config import RunConfig
from pipeline.errors import NoScenesError
from pipeline.sources import make_source
from pipeline.sources.loading import SCL, load_dem, load_reflectance, usable_scenes
from pipeline.summary import yearly_summary
from pipeline.vectorize import assign_sites, class_map, feature_table, label_features

log = logging.getLogger(__name__)

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
NATIVE_20M = {"rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22", SCL}


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


def probe_scenes(scenes, bands, progress: Progress | None = None, batch: int = 16):
    """``usable_scenes`` in batches, so a progress bar can follow the probing of thousands of files."""
    good, bad = [], []
    bar = progress(total=len(scenes), desc="probe", unit="scene") if progress else None
    try:
        for i in range(0, len(scenes), batch):
            g, b = usable_scenes(scenes[i:i + batch], bands)
            good += g
            bad += b
            if bar:
                bar.update(len(scenes[i:i + batch]))
    finally:
        if bar:
            bar.close()
    return good, bad


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


def detect(cfg: RunConfig, aoi: AOI, scenes, dem_items, timings: Timings, progress: Progress | None = None) -> dict:
    """Scenes -> per-pixel onset rasters, valid-observation counts and slope (numpy)."""
    start, end = cfg.period.start, cfg.period.end
    with timings("graph"):
        cube = load_reflectance(scenes, aoi.grid, indices.BANDS, cfg.compute.chunk_px)
        valid = masking.clear_mask(cube, cfg.mask.invalid_scl, cfg.mask.cloud_buffer_px, indices.BANDS)
        ind = indices.all_indices(cube)
        water = classify.pond_like(ind, valid, cfg.ponds)
        flags = {"valid": valid, "pond": water, "bare": classify.bare_like(ind, valid, cfg.clearings, water),
                 "green": classify.green_like(ind, valid, cfg.clearings)}
        monthly = composite.monthly_counts(flags, start, end)
        ch = cfg.change
        ponds = onset_maps(monthly["valid"], monthly["pond"], ch.pond_window_months, ch.persistence,
                           ch.min_observations)
        bare = onset_maps(monthly["valid"], monthly["bare"], ch.clearing_window_months, ch.persistence,
                          ch.min_observations)
        bare["bare_share"] = share_while_active_maps(bare, monthly["valid"], monthly["bare"])
        bare["green_share"] = share_while_active_maps(bare, monthly["valid"], monthly["green"])
        yearly_valid = composite.yearly_counts(monthly["valid"])
        dem = load_dem(dem_items, aoi.grid)
    with timings("compute"), dask_progress(progress, "compute"):
        ponds, bare, yearly_valid, dem = dask.compute(ponds, bare, yearly_valid, dem)
    return {"months": monthly["month"].to_index(), "ponds": ponds, "bare": bare,
            "yearly_valid": yearly_valid, "dem": dem, "n_days": int(cube.sizes["time"]),
            "scene_ids": [s for ids in cube["scene_ids"].values for s in str(ids).split(",")]}


def features(cfg: RunConfig, aoi: AOI, det: dict):
    """Onset rasters -> pond, clearing and site polygons."""
    inside = aoi_mask(aoi)
    months = det["months"]
    slope = None
    if det["dem"] is not None:
        slope = terrain.slope_deg(det["dem"], cfg.resolution).values

    def layer(maps, with_slope, medians=()):
        onset = maps["onset"].values
        mask = (onset >= 0) & inside
        labels = label_features(mask)
        return feature_table(labels, aoi.grid, month_to_year(onset, months), month_to_year(maps["last"].values, months),
                             maps["months_seen"].values, slope if with_slope else None,
                             {k: maps[k].values for k in medians})

    clearings = classify.select_clearings(layer(det["bare"], True, ("bare_share", "green_share")), cfg.clearings)
    ponds = classify.select_ponds(layer(det["ponds"], False), clearings, cfg.ponds)
    ponds, clearings, sites = assign_sites(ponds, clearings, cfg.sites.linkage_m, cfg.sites.attach_m)
    ponds = ponds[["pond_id", "first_year", "last_year", "months_seen", "area_m2", "site_id", "geometry"]]
    clearings = clearings[["clearing_id", "first_year", "last_year", "months_seen", "area_m2", "mean_slope_deg",
                           "bare_share", "green_share", "elongation", "persistent", "site_id", "geometry"]]
    valid_per_year = {int(y): int(np.median(det["yearly_valid"].sel(year=y).values[inside]))
                      for y in det["yearly_valid"]["year"].values}
    return ponds, clearings, sites, valid_per_year


def feature_rasters(aoi: AOI, det: dict, ponds, clearings) -> dict:
    """The per-pixel view of the final features: class map, each pixel's own first year, and the
    clear-observation count per year (what an analyst checks before trusting a year)."""
    classes = class_map(aoi.grid, ponds, clearings)
    months = det["months"]
    pond_year = month_to_year(det["ponds"]["onset"].values, months)
    clear_year = month_to_year(det["bare"]["onset"].values, months)
    first_year = np.where(classes == 2, pond_year, np.where(classes == 1, clear_year, 0))
    yv = det["yearly_valid"]
    return {"classes": classes, "first_year": np.clip(first_year, 0, None).astype(np.uint16),
            "valid_per_year": yv.values.astype(np.uint16), "years": [int(y) for y in yv["year"].values]}


def plan(cfg: RunConfig) -> dict:
    """What a run would read, without reading pixels: the scenes found (and set aside by the cloud
    limit) and the volume of pixels to fetch for the AOI window (uncompressed; COG range reads fetch
    about that, compressed)."""
    aoi = load_aoi(cfg.aoi, cfg.resolution)
    source = make_source(cfg.source)
    found = source.search(aoi.geometry, cfg.period.start, cfg.period.end, cfg.source.max_cloud_cover)
    h, w = aoi.grid.shape.yx
    per_scene = 0
    for b in [*indices.BANDS, SCL]:
        px = (h // 2) * (w // 2) if b in NATIVE_20M else h * w
        per_scene += px * (1 if b == SCL else 2)  # uint8 SCL, uint16 reflectance DN
    scenes = [{"id": it.id, "datetime": str(it.datetime)[:19],
               "cloud_cover": it.properties.get("eo:cloud_cover")} for it in found.scenes]
    return {"aoi": cfg.name or aoi.name, "area_km2": round(aoi.area_km2, 2), "grid": f"{w} x {h} px",
            "crs": str(aoi.grid.crs), "period": [cfg.period.start.isoformat(), cfg.period.end.isoformat()],
            "source": source.name, "scenes": scenes, "skipped": found.skipped,
            "dem_items": [it.id for it in found.dem], "bands": [*indices.BANDS, SCL],
            "bytes_per_scene": per_scene, "bytes_total": per_scene * len(scenes), "out": str(cfg.out)}


def run(cfg: RunConfig, today: date | None = None, progress: Progress | None = None) -> RunResult:
    timings = Timings()
    started = datetime.now(timezone.utc)
    warnings: list[str] = []
    with timings("aoi"):
        aoi = load_aoi(cfg.aoi, cfg.resolution)
    name = cfg.name or aoi.name
    source = make_source(cfg.source)
    with timings("search"):
        found = source.search(aoi.geometry, cfg.period.start, cfg.period.end, cfg.source.max_cloud_cover)
    with timings("probe"):
        scenes, unreadable = probe_scenes(found.scenes, [*indices.BANDS, SCL], progress)
    if not scenes:
        raise NoScenesError(f"none of the {len(found.scenes)} scenes found can be read "
                            f"(first: {unreadable[0]['id']}: {unreadable[0]['reason']}): check or re-fetch the catalog files")
    if not found.dem:
        warnings.append("no cop-dem-glo-30 item covers the AOI: slope unknown, the hillside rule was not applied")
    with dask.config.set(scheduler="threads", num_workers=cfg.compute.workers):
        det = detect(cfg, aoi, scenes, found.dem, timings, progress)
    with timings("vectorise"):
        ponds, clearings, sites, valid_per_year = features(cfg, aoi, det)
        rasters = feature_rasters(aoi, det, ponds, clearings)
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
        "source": source.name,
        "scenes_used": det["scene_ids"], "n_scenes_used": len(det["scene_ids"]), "n_days": det["n_days"],
        "scenes_skipped": [*found.skipped, *unreadable], "dem_items": [it.id for it in found.dem],
        "counts": {"sites": len(sites), "ponds": len(ponds), "clearings": len(clearings)},
        "warnings": warnings, "packages": package_versions(),
    }
    with timings("export"), export.staged_run_dir(cfg.out) as tmp:
        gpkg, csv = tmp / export.GPKG, tmp / export.SUMMARY
        export.write_footprints(gpkg, {"ponds": ponds, "clearings": clearings, "sites": sites})
        export.write_layer_styles(gpkg, years)
        export.write_sld(tmp / export.STYLES_SLD, years)
        export.write_summary(csv, table)
        tifs = export.write_rasters(tmp, aoi.grid, rasters["first_year"], rasters["classes"],
                                    rasters["valid_per_year"], rasters["years"])
        manifest["timings_s"] = timings.seconds
        pages = report.write_report(tmp, manifest)
        export.write_manifest(tmp / export.MANIFEST, manifest, [gpkg, csv, tmp / export.STYLES_SLD, *tifs, *pages])
    return RunResult(out=Path(cfg.out), summary=table, manifest=manifest)
