"""The orchestrator: the one place that knows the order of the stages. Search and fetch (``sources``),
count (``count``), onsets (``onset``), features (``features``), the yearly table (``summary``), and the
run dir written atomically (``export``, ``report``, ``charts``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from pipeline import charts, count, evidence, export, register, report, stac, train
from pipeline.aoi import AOI, load_aoi
from pipeline.config import RunConfig
from pipeline.errors import NoScenesError
from pipeline.features import feature_rasters, features
from pipeline.onset import OnsetMaps, onset_stage
from pipeline.provenance import code_version, package_versions
from pipeline.scheduler import Progress, Timings, dask_progress, dask_scheduler
from pipeline.sources import find_scenes, make_source
from pipeline.sources.loading import BANDS_20M, SCL, solar_day, usable_scenes
from pipeline.summary import site_changes, yearly_summary

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out: Path
    summary: "object"
    manifest: dict


@dataclass
class Detection:
    """What ``detect`` found: the onset maps over ``months`` and what they were made from."""

    months: pd.DatetimeIndex
    maps: OnsetMaps
    scene_ids: list[str]
    n_days: int
    years_reused: list[int]
    unreadable: list[dict]
    pictures: list[evidence.YearPictures]


def detect(
    cfg: RunConfig, aoi: AOI, scenes, dem_items, timings: Timings, workdir: Path, progress: Progress | None = None
) -> Detection:
    """Scenes -> per-pixel onset maps on the AOI grid. Year by year, so memory does not grow with the
    period: each year's scenes are counted into a store of monthly counts (reused when nothing it depends
    on has changed), then the onsets are worked out over all months from the stores, block by block."""
    counted = count.count_years(cfg, aoi, scenes, workdir, timings, progress)
    if not counted.scenes:
        first = counted.unreadable[0] if counted.unreadable else {"id": "-", "reason": "no scene"}
        raise NoScenesError(
            f"none of the {len(scenes)} scenes found can be read (first: {first['id']}: "
            f"{first['reason']}): check or re-fetch the catalog files"
        )
    months = count.month_starts(cfg.period.start, cfg.period.end)
    with timings("onsets"), dask_progress(progress, "onsets"):
        maps = onset_stage(
            counted.stores,
            months,
            aoi.grid.shape.yx,
            cfg.compute.onset_chunk_px(len(months)),
            cfg.change,
            dem_items,
            aoi.grid,
            cfg.resolution,
        )
    pictures = []
    if cfg.outputs.evidence:
        with timings("evidence"):
            years = list(range(cfg.period.start.year, cfg.period.end.year + 1))
            pictures = evidence.year_pictures(counted.stores, years)
    return Detection(
        months,
        maps,
        [s.id for s in counted.scenes],
        len({solar_day(s) for s in counted.scenes}),
        counted.reused,
        counted.unreadable,
        pictures,
    )


def plan(cfg: RunConfig) -> dict:
    """What a run would read, without reading pixels: the scenes found (and set aside by the cloud
    limit) and the volume of pixels to fetch for the AOI window (uncompressed; COG range reads fetch
    about that, compressed)."""
    aoi = load_aoi(cfg.aoi, cfg.resolution)
    source = make_source(cfg.source)
    found = source.search(aoi.geometry, cfg.period.start, cfg.period.end, cfg.source.max_cloud_cover)
    h, w = aoi.grid.shape.yx
    per_scene = pixel_bytes_per_scene(aoi.grid)
    scenes = [
        {"id": it.id, "datetime": str(it.datetime)[:19], "cloud_cover": it.properties.get("eo:cloud_cover")}
        for it in found.scenes
    ]
    return {
        "aoi": cfg.name or aoi.name,
        "area_km2": round(aoi.area_km2, 2),
        "grid": f"{w} x {h} px",
        "crs": str(aoi.grid.crs),
        "period": [cfg.period.start.isoformat(), cfg.period.end.isoformat()],
        "source": source.name,
        "scenes": scenes,
        "skipped": found.skipped,
        "dem_items": [it.id for it in found.dem],
        "bands": [*count.BANDS, SCL],
        "bytes_per_scene": per_scene,
        "bytes_total": per_scene * len(scenes),
        "out": str(cfg.out),
    }


# Above this many bytes of pixels to read, a run is more than a monthly job should take on: warn
# (the configured Chipwe/Pangwa AOI, ~1,700 km2, reads ~190 MB a scene, ~100 GB over 7 years).
HUGE_VOLUME_BYTES = 250e9


def pixel_bytes_per_scene(grid) -> int:
    """Bytes of pixels one scene contributes on ``grid``: uint16 reflectance, uint8 SCL, 20 m bands at 20 m."""
    h, w = grid.shape.yx
    return sum(
        (h // 2) * (w // 2) * (1 if b == SCL else 2) if b in BANDS_20M else h * w * 2 for b in [*count.BANDS, SCL]
    )


def _work_parent(out: Path) -> Path:
    """Scratch space beside the output (same disk), made if needed."""
    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _scenes_to_count(cfg: RunConfig, aoi, fetch_progress, warnings: list[str]):
    """The scenes found for the AOI and period that have every asset the count needs: (what the search
    found, the usable scenes, the incomplete ones with why); adds the run's warnings about them."""
    got = find_scenes(cfg, aoi, [*count.BANDS, SCL], fetch_progress)
    found = got.search
    scenes, incomplete = usable_scenes(found.scenes, [*count.BANDS, SCL], probe=False)
    if not scenes:
        raise NoScenesError(
            f"none of the {len(found.scenes)} scenes found has the assets needed "
            f"(first: {incomplete[0]['id']}: {incomplete[0]['reason']}): check the catalog"
        )
    volume = pixel_bytes_per_scene(aoi.grid) * len(scenes)
    if volume > HUGE_VOLUME_BYTES:
        warnings.append(
            f"huge AOI: {aoi.area_km2:,.0f} km2 x {len(scenes)} scenes is about {volume / 1e9:,.3g} GB of "
            "pixels to read: expect a long run; a smaller AOI or a shorter period reads less"
        )
        log.warning(warnings[-1])
    if not found.dem:
        warnings.append("no cop-dem-glo-30 item covers the AOI: slope unknown, the hillside rule was not applied")
    return got, scenes, incomplete


def _write_run_dir(cfg, aoi, name, years, table, layers, rasters, manifest: dict, timings, changes, pictures) -> None:
    """The run dir, staged and renamed into place whole: GeoPackage with styles, SLD, CSV, COGs, charts,
    the changes since the last run, evidence images, report and run.json with every file's checksum."""
    with export.staged_run_dir(cfg.out) as tmp:
        gpkg, csv = tmp / export.GPKG, tmp / export.SUMMARY
        export.write_summary(csv, table)
        changed = export.write_changes(tmp, changes)
        _link_chips(layers, pictures)
        # the charts are drawn, the chips and pictures written, while GDAL writes the files
        with ThreadPoolExecutor(3, thread_name_prefix="export") as pool:
            chips = pool.submit(
                evidence.write_site_chips, tmp, layers["sites"], aoi.grid, pictures, cfg.outputs.chip_margin_m
            )
            drawn = pool.submit(charts.draw, csv, name, tmp)
            written = pool.submit(
                export.write_rasters,
                tmp,
                aoi.grid,
                rasters["first_year"],
                rasters["classes"],
                rasters["valid_per_year"],
                rasters["years"],
            )
            composites = pool.submit(evidence.write_year_pictures, tmp, aoi.grid, pictures, export.write_cog)
            export.write_footprints(gpkg, layers)
            export.write_layer_styles(gpkg, years)
            export.write_sld(tmp / export.STYLES_SLD, years)
            page = report.page_layers(tmp)  # the page's map, while the rasters are written
            tifs, svgs, shown = [*written.result(), *composites.result()], drawn.result(), chips.result()
        manifest["timings_s"] = timings.seconds
        pages = report.write_report(tmp, manifest, svgs, page, rasters["valid_per_year"], changes)
        outputs = [gpkg, csv, *changed, tmp / export.STYLES_SLD, *tifs, *shown, *pages]
        export.write_manifest(tmp / export.MANIFEST, manifest, outputs)
        stac.write_item(tmp, Path(cfg.out).name)


def _link_chips(layers: dict, pictures) -> None:
    """Link each site to its before/after chips (``chip_before``, ``chip_after``: paths in the run dir)."""
    if not pictures:
        return
    links = evidence.chip_links(layers["sites"], [p.year for p in pictures])
    sites = layers["sites"] = layers["sites"].copy()
    sites["chip_before"] = [links.get(int(s), ("", ""))[0] for s in sites["site_id"]]
    sites["chip_after"] = [links.get(int(s), ("", ""))[1] for s in sites["site_id"]]


def _registered(cfg: RunConfig, aoi: AOI, layers: dict, run_id: str, today: date | None):
    """The run's layers with the register's ids and verdicts, the register after this run, and what
    changed since the last one. Edits to verdicts made in the last run's footprints.gpkg are taken up."""
    path = register.register_path(cfg.out)
    reg = register.read_register(path, aoi.grid.crs)
    if reg.empty:
        reg = register.seed_from_run(cfg.out, aoi.grid.crs) or reg
    before = reg.sites.copy()
    register.take_up_edits(reg, register.exported_sites(cfg.out), today or date.today())
    reg, ponds, clearings, sites = register.update_register(
        reg, layers["ponds"], layers["clearings"], layers["sites"], run_id, cfg.sites.match_m
    )
    changes = site_changes(before, reg.sites, cfg.sites.grown_pct)
    return {"ponds": ponds, "clearings": clearings, "sites": sites}, reg, changes


def run(cfg: RunConfig, today: date | None = None, progress: Progress | None = None, fetch_progress=None) -> RunResult:
    """One configured run, end to end. ``progress`` is a tqdm-like factory for compute bars,
    ``fetch_progress`` the scene cache's download progress (both created by the CLI)."""
    timings = Timings()
    started = datetime.now(timezone.utc)
    warnings: list[str] = []
    with timings("aoi"):
        aoi = load_aoi(cfg.aoi, cfg.resolution)
    name = cfg.name or aoi.name
    with timings("search"):
        got, scenes, incomplete = _scenes_to_count(cfg, aoi, fetch_progress, warnings)
    found = got.search
    with (
        dask_scheduler(cfg.compute),
        tempfile.TemporaryDirectory(
            prefix=f".{Path(cfg.out).name}.work-", suffix=f"-{os.getpid()}", dir=_work_parent(cfg.out)
        ) as work,
    ):
        det = detect(cfg, aoi, scenes, found.dem, timings, Path(work), progress)
    with timings("vectorise"):
        ponds, clearings, sites, valid_per_year = features(cfg, aoi, det.maps, det.months)
        rasters = feature_rasters(aoi, det.maps, det.months, ponds, clearings, cfg.change.clearing_lead_months)
    years = list(range(cfg.period.start.year, cfg.period.end.year + 1))
    gaps = [y for y in years if valid_per_year.get(y, 0) == 0]
    if gaps:
        warnings.append(f"no clear observation in {gaps}: those years are gaps, not years without mining")
    for w in warnings:
        log.warning(w)
    manifest = _manifest(cfg, aoi, name, started, got, det, [*found.skipped, *incomplete, *det.unreadable], warnings)
    reg_path = register.register_path(cfg.out)
    # held from reading the register to writing it, so a ``review`` meanwhile waits instead of being lost
    with register.register_lock(reg_path):
        with timings("register"):
            layers, reg, changes = _registered(
                cfg, aoi, {"ponds": ponds, "clearings": clearings, "sites": sites}, manifest["created"], today
            )
        table = yearly_summary(
            name, years, layers["ponds"], layers["clearings"], layers["sites"], valid_per_year, cfg.period.end, today
        )
        manifest["counts"] = {k: len(v) for k, v in layers.items()}
        manifest["changes"] = changes["change"].value_counts().to_dict()
        with timings("export"):
            _write_run_dir(cfg, aoi, name, years, table, layers, rasters, manifest, timings, changes, det.pictures)
        # after the run dir: a run killed in between leaves the old register, and the next run matches
        # against it again, giving the same ids
        register.write_register(reg_path, reg)
        stac.write_collection(cfg.out)
    return RunResult(out=Path(cfg.out), summary=table, manifest=manifest)


def _manifest(cfg: RunConfig, aoi: AOI, name: str, started: datetime, got, det: Detection, skipped, warnings) -> dict:
    manifest = {
        "aoi": name,
        "created": started.isoformat(timespec="seconds"),
        "code_version": code_version(),
        "aoi_geometry": shapely.geometry.mapping(aoi.geometry),
        "config": cfg.model_dump(mode="json"),
        "grid": {"crs": str(aoi.grid.crs), "shape": list(aoi.grid.shape.yx), "transform": list(aoi.grid.affine)[:6]},
        "source": got.source,
        **({"fetch": got.fetch} if got.fetch is not None else {}),
        "scenes_used": det.scene_ids,
        "n_scenes_used": len(det.scene_ids),
        "n_days": det.n_days,
        "composite_years_reused": det.years_reused,
        "scenes_skipped": skipped,
        "dem_items": [it.id for it in got.search.dem],
        "warnings": warnings,
        "packages": package_versions(),
    }
    if cfg.classifier == "model" and cfg.model_path is not None:  # which model decided, exactly
        b = train.load(cfg.model_path)
        manifest["model"] = {
            k: b[k] for k in ("path", "version", "sklearn", "training_data_sha256", "n_pixels", "features")
        }
    return manifest


def detect_catalog(cfg):
    """detect() on a configured catalog: (its Detection, the AOI)."""
    aoi = load_aoi(cfg.aoi, cfg.resolution)
    got = find_scenes(cfg, aoi, [*count.BANDS, SCL], None)
    scenes, _ = usable_scenes(got.search.scenes, [*count.BANDS, SCL], probe=False)
    with dask_scheduler(cfg.compute), tempfile.TemporaryDirectory(prefix=".train-", dir=_work_parent(cfg.out)) as w:
        det = detect(cfg, aoi, scenes, got.search.dem, Timings(), Path(w))
    return det, aoi


def train_from_catalogs(cfgs: list, label_files: list[Path], out: Path, seed: int = 0) -> dict:
    """Fit the pixel classifier (``train``) on every (config, labels) pair and save it to ``out``; returns
    the saved bundle (without re-reading). A label file is polygons (contract 5) or a site register,
    whose confirmed and rejected sites are the positives and negatives."""
    from pipeline.lab.evaluate import read_truth

    xs, ys, ids = [], [], []
    rng = np.random.default_rng(seed)
    for cfg, labels in zip(cfgs, label_files):
        det, aoi = detect_catalog(cfg)
        known = None
        if register.is_register(labels):  # analysts' verdicts: only the reviewed sites are labelled
            truth = register.verdict_labels(labels, aoi.grid.crs)
            known = train.known_mask(aoi.grid, truth["reviewed"])
        else:
            truth = read_truth(Path(labels), aoi.grid.crs)
        y = train.label_raster(aoi.grid, truth["ponds"], truth["clearings"])
        x, yy = train.training_pixels(
            train.pixel_features(det.maps.ponds, det.maps.bare, det.maps.slope, cfg.resolution), y, rng, known
        )
        xs.append(x)
        ys.append(yy)
        ids.append(det.scene_ids)
        log.info("%s: %d training pixels (%d pond, %d clearing)", labels, len(yy), (yy == 2).sum(), (yy == 1).sum())
    x, y = np.concatenate(xs), np.concatenate(ys)
    model = train.fit(x, y, seed)
    return train.save(out, model, label_files, ids, len(y))
