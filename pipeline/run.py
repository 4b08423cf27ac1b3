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


def detect(cfg: RunConfig, aoi: AOI, scenes, dem_items, timings: Timings) -> dict:
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
    with timings("compute"):
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


def run(cfg: RunConfig, today: date | None = None) -> RunResult:
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
        scenes, unreadable = usable_scenes(found.scenes, [*indices.BANDS, SCL])
    if not scenes:
        raise NoScenesError(f"none of the {len(found.scenes)} scenes found can be read "
                            f"(first: {unreadable[0]['id']}: {unreadable[0]['reason']}): check or re-fetch the catalog files")
    if not found.dem:
        warnings.append("no cop-dem-glo-30 item covers the AOI: slope unknown, the hillside rule was not applied")
    with dask.config.set(scheduler="threads", num_workers=cfg.compute.workers):
        det = detect(cfg, aoi, scenes, found.dem, timings)
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
