"""Onset maps -> features: pond, clearing and site polygons with their evidence and confidence, and the
per-pixel rasters of the final features."""

from __future__ import annotations

import numpy as np

from pipeline import classify, confidence, train
from pipeline.aoi import AOI, aoi_mask
from pipeline.change import lead_onset, month_to_year
from pipeline.config import RunConfig
from pipeline.onset import OnsetMaps
from pipeline.vectorize import assign_sites, class_map, feature_table, grow_labels, label_features

# the layers' columns, in the order GIS users see them
POND_COLUMNS = [
    "pond_id",
    "first_year",
    "last_year",
    "months_seen",
    "area_m2",
    "site_id",
    *confidence.COLUMNS,
    "water_share",
    "mndwi_mean",
    "ndvi_mean",
    "geometry",
]
CLEARING_COLUMNS = [
    "clearing_id",
    "first_year",
    "last_year",
    "months_seen",
    "area_m2",
    "mean_slope_deg",
    "bare_share",
    "green_share",
    "elongation",
    "persistent",
    "provisional",
    "site_id",
    *confidence.COLUMNS,
    "bsi_mean",
    "ndvi_mean",
    "geometry",
]


def features(cfg: RunConfig, aoi: AOI, maps: OnsetMaps, months):
    """Onset maps over ``months`` -> pond, clearing and site polygons, and the median clear views per year."""
    inside = aoi_mask(aoi)
    slope = maps.slope

    keep: dict[str, np.ndarray | bool] = {"ponds": True, "bare": True}
    if cfg.classifier == "model" and cfg.model_path is not None:  # the trained pixel classifier filters
        keep["ponds"], keep["bare"] = train.predict_masks(
            train.load(cfg.model_path), train.pixel_features(maps.ponds, maps.bare, slope, cfg.resolution)
        )

    def layer(maps, with_slope, medians=(), only=True, grow_into=None, grow_px=0, dated=None, rasters=None):
        onset = maps["onset"]
        mask = (onset >= 0) & inside & only
        labels = label_features(mask)
        grown = grow_labels(labels, grow_into & inside, grow_px) if grow_into is not None and grow_px else None
        onset = onset if dated is None else dated
        table = feature_table(
            labels,
            aoi.grid,
            month_to_year(onset, months),
            month_to_year(maps["last"], months),
            maps["months_seen"],
            slope if with_slope else None,
            {
                **{k: maps[k] for k in medians},
                **(rasters or {}),
                "onset_month": onset.astype(np.float32),
                "last_month": maps["last"].astype(np.float32),
            },
            grown,
        )
        return table, labels

    open_, dated = None, None
    if "open_onset" in maps.bare:
        open_ = maps.bare["open_onset"]
        dated = clearing_dates(maps.bare, cfg.change.clearing_lead_months)
        open_ = open_ >= 0
    bare, labels = layer(
        maps.bare,
        True,
        ("bare_share", "green_share", *confidence.CLEARING_EVIDENCE),
        keep["bare"],
        open_,
        cfg.clearings.grow_px,
        dated,
    )
    bare["road"] = classify.road_cuts(labels, cfg.resolution, cfg.clearings)[bare["label"].to_numpy()]
    clearings = classify.select_clearings(bare, cfg.clearings, months)
    clearings = confidence.clearing_confidence(clearings, months, cfg.clearings)
    settings = classify.pond_settings(maps.ponds, slope, cfg.resolution, cfg.ponds)
    ponds = classify.select_ponds(
        layer(maps.ponds, False, confidence.POND_EVIDENCE, keep["ponds"], rasters=settings)[0], clearings, cfg.ponds
    )
    ponds = confidence.pond_confidence(ponds, months, cfg.ponds)
    ponds, clearings, sites = assign_sites(ponds, clearings, cfg.sites.linkage_m, cfg.sites.attach_m)
    sites = confidence.site_confidence(sites, ponds, clearings)
    ponds, clearings = ponds[POND_COLUMNS], clearings[CLEARING_COLUMNS]
    valid_per_year = {int(y): int(np.median(valid[inside])) for y, valid in zip(maps.years, maps.yearly_valid)}
    return ponds, clearings, sites, valid_per_year


def clearing_dates(bare, lead_months: int) -> np.ndarray:
    """Each clearing pixel's month of onset for dating: the bare onset, moved back to when the canopy went
    (no longer green, or its NDVI fell) if that came at most ``lead_months`` before."""
    dated = lead_onset(bare["onset"], bare["open_onset"], lead_months)
    if "dip_onset" in bare:
        dated = lead_onset(dated, bare["dip_onset"], lead_months)
    return dated


def feature_rasters(aoi: AOI, maps: OnsetMaps, months, ponds, clearings, lead_months: int = 0) -> dict:
    """The per-pixel view of the final features: class map, each pixel's own first year, and the
    clear-observation count per year (what an analyst checks before trusting a year)."""
    classes = class_map(aoi.grid, ponds, clearings)
    pond_year = month_to_year(maps.ponds["onset"], months)
    clear_year = month_to_year(maps.bare["onset"], months)
    if "open_onset" in maps.bare:  # a clearing's (and a grown edge pixel's) first month is when its canopy went
        open_onset = maps.bare["open_onset"]
        clear_year = month_to_year(clearing_dates(maps.bare, lead_months), months)
        clear_year = np.where(clear_year >= 0, clear_year, month_to_year(open_onset, months))
    first_year = np.where(classes == 2, pond_year, np.where(classes == 1, clear_year, 0))
    return {
        "classes": classes,
        "first_year": np.clip(first_year, 0, None).astype(np.uint16),
        "valid_per_year": maps.yearly_valid.astype(np.uint16),
        "years": [int(y) for y in maps.years],
    }
