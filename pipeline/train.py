"""A trainable pixel classifier over the time-series evidence that detect already computes.

The rules decide per pixel with fixed thresholds (onset, shares while active); the model learns the
same decision from labelled polygons, over more of what the time series offers: how long a pixel
stayed water or bare, the clear views behind it, the share of them that were water / bare / green,
mean MNDWI / NDVI / BSI while active, slope, and context (how much bare ground and water lies within
~100 m, distance to the nearest bare candidate: a leach pond sits at the foot of its clearing).

It is a *filter on the candidates*: a pixel can be a pond (clearing) only where the pond (bare) onset
exists, so the dates stay those of the persistence logic, and the object rules (size, pond next to
a clearing, site linkage) apply unchanged after it. It can remove what the rules let in; it cannot
find a pond the persistence logic never saw.

Compute is pure (arrays in, arrays out); ``run.train_from_catalogs`` and the CLI do the I/O. The saved
file (joblib) holds the estimator, its feature list, ``MODEL_VERSION``, the scikit-learn version and
a SHA-256 of the training data (label files and scene ids), so a run records exactly what it used.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
from scipy import ndimage

from pipeline.errors import ConfigError
from pipeline.extras import require

log = logging.getLogger(__name__)

MODEL_VERSION = 1
CLASSES = {0: "other", 1: "clearing", 2: "pond"}
FEATURES = [
    "pond_candidate",
    "pond_months_seen",
    "pond_n_clear_obs",
    "water_share",
    "pond_mndwi_mean",
    "pond_ndvi_mean",
    "bare_candidate",
    "bare_months_seen",
    "bare_n_clear_obs",
    "bare_share",
    "green_share",
    "bsi_mean",
    "bare_ndvi_mean",
    "slope_deg",
    "bare_within_100m",
    "water_within_100m",
    "dist_to_bare_m",
]
NEGATIVES_PER_POSITIVE = 3  # non-candidate pixels are trivially "other": a few teach the model that
MAX_TRAIN_PIXELS = 400_000  # HistGradientBoosting on 2 cores: ~10-20 s at this size


def pixel_features(ponds, bare, slope: np.ndarray | None, resolution: float) -> np.ndarray:
    """(y, x, len(FEATURES)) float32 from the pond and the clearing onset and evidence maps (name -> array,
    as ``onset.OnsetMaps`` holds them, or Datasets) and the slope."""
    p, b = ({k: np.asarray(v) for k, v in maps.items()} for maps in (ponds, bare))
    pond_c = p["onset"] >= 0
    bare_c = b["onset"] >= 0
    k = max(1, int(round(100.0 / resolution))) * 2 + 1
    dist = ndimage.distance_transform_edt(~bare_c) * resolution if bare_c.any() else np.full(bare_c.shape, 1e4)
    cols = [
        pond_c,
        p["months_seen"],
        p["n_clear_obs"],
        p["water_share"],
        p["mndwi_mean"],
        p["ndvi_mean"],
        bare_c,
        b["months_seen"],
        b["n_clear_obs"],
        b["bare_share"],
        b["green_share"],
        b["bsi_mean"],
        b["ndvi_mean"],
        slope if slope is not None else np.full(pond_c.shape, np.nan),
        ndimage.uniform_filter(bare_c.astype(np.float32), k),
        ndimage.uniform_filter(pond_c.astype(np.float32), k),
        np.minimum(dist, 1000.0),
    ]
    return np.stack([np.asarray(c, dtype=np.float32) for c in cols], axis=-1)


def label_raster(grid, ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame) -> np.ndarray:
    """0 other, 1 clearing, 2 pond: ponds burnt in over clearings, every pixel a pond touches (most
    pools are smaller than a pixel, and a pixel half pond is what the pond detector sees)."""
    from rasterio.features import rasterize

    out = np.zeros(grid.shape.yx, np.uint8)
    crs = grid.crs.to_wkt()
    for gdf, value, touched in ((clearings, 1, False), (ponds, 2, True)):
        if len(gdf):
            geoms = gdf.to_crs(crs).geometry.values
            rasterize(((g, value) for g in geoms), out=out, transform=grid.affine, all_touched=touched)
    return out


def training_pixels(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, known: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate pixel (pond or bare onset) and a sample of the rest; only pixels where ``known``
    (labels from verdicts cover the reviewed sites, not the whole AOI)."""
    flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1)
    inside = np.ones(len(flat_y), bool) if known is None else np.asarray(known, bool).reshape(-1)
    cand = (flat_x[:, FEATURES.index("pond_candidate")] > 0) | (flat_x[:, FEATURES.index("bare_candidate")] > 0)
    idx = np.flatnonzero(cand & inside)
    others = np.flatnonzero(~cand & inside)
    n_other = min(len(others), NEGATIVES_PER_POSITIVE * max(int((flat_y[idx] > 0).sum()), 1))
    idx = np.concatenate([idx, rng.choice(others, n_other, replace=False)]) if n_other else idx
    return flat_x[idx], flat_y[idx]


def known_mask(grid, areas: gpd.GeoDataFrame) -> np.ndarray:
    """Pixels inside ``areas`` (the reviewed sites' surroundings), as a boolean raster on ``grid``."""
    from rasterio.features import rasterize

    out = np.zeros(grid.shape.yx, np.uint8)
    if len(areas):
        geoms = areas.to_crs(grid.crs.to_wkt()).geometry.values
        rasterize(((g, 1) for g in geoms), out=out, transform=grid.affine)
    return out.astype(bool)


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0, max_iter: int = 200):
    ensemble = require("sklearn.ensemble", "train", "training the pixel classifier")

    if len(y) > MAX_TRAIN_PIXELS:
        pick = np.random.default_rng(seed).choice(len(y), MAX_TRAIN_PIXELS, replace=False)
        x, y = x[pick], y[pick]
    # balanced: ponds are a few hundred pixels against tens of thousands of clearing and forest pixels
    model = ensemble.HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=31, class_weight="balanced", random_state=seed
    )
    return model.fit(x, y)


def predict_masks(bundle: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pond mask, clearing mask) over the grid; only candidate pixels are asked."""
    if bundle["features"] != FEATURES:
        raise ConfigError(
            f"model {bundle.get('path')} was trained on features {bundle['features']}, this code "
            f"computes {FEATURES}: retrain it with `python -m pipeline train`"
        )
    shape = x.shape[:2]
    flat = x.reshape(-1, x.shape[-1])
    cand = (flat[:, FEATURES.index("pond_candidate")] > 0) | (flat[:, FEATURES.index("bare_candidate")] > 0)
    label = np.zeros(len(flat), np.uint8)
    if cand.any():
        label[cand] = bundle["model"].predict(flat[cand])
    classes = label.reshape(shape)
    return classes == 2, classes == 1


# ------------------------------------------------------------------------------------------------ I/O


def data_hash(label_files: list[Path], scene_ids: list[list[str]]) -> str:
    h = hashlib.sha256()
    for f, ids in zip(label_files, scene_ids):
        h.update(Path(f).read_bytes())
        h.update("\n".join(sorted(ids)).encode())
    return h.hexdigest()


def save(path: Path, model, label_files, scene_ids, n_pixels: int) -> dict:
    joblib = require("joblib", "train", "saving a pixel classifier")
    sklearn = require("sklearn", "train", "saving a pixel classifier")
    bundle = {
        "model": model,
        "features": FEATURES,
        "classes": CLASSES,
        "version": MODEL_VERSION,
        "sklearn": sklearn.__version__,
        "training_data_sha256": data_hash(label_files, scene_ids),
        "labels": [str(f) for f in label_files],
        "n_pixels": int(n_pixels),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(bundle, path)
    return bundle


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"model file {path} does not exist: train one with `python -m pipeline train` or set classifier: rules"
        )
    bundle = require("joblib", "train", "a run with classifier: model").load(path)
    if bundle.get("version") != MODEL_VERSION:
        raise ConfigError(
            f"model {path} is version {bundle.get('version')}, this code reads {MODEL_VERSION}: retrain it"
        )
    bundle["path"] = str(path)
    return bundle
