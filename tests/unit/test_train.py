"""The trainable pixel classifier on small synthetic rasters (the side-by-side on seeds is make evaluate)."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr

from pipeline import train
from pipeline.aoi import snapped_grid
from pipeline.config import load_config
from pipeline.errors import ConfigError


def _det(shape=(40, 40)):
    """A bare hillside (rows 5-25) with a pond (rows 22-24, cols 10-12) at its foot, and a paddy (rows
    30-38) that is bare-like in the dry season but greens: bare candidate, green share 0.3."""
    rng = np.random.default_rng(0)

    def z(v):
        return np.full(shape, v, np.float32)

    bare_on = np.full(shape, -1, np.int16)
    bare_on[5:26, 5:35] = 10
    bare_on[30:39, 5:35] = 3
    green = z(np.nan)
    green[5:26, 5:35] = 0.0
    green[30:39, 5:35] = 0.3
    pond_on = np.full(shape, -1, np.int16)
    pond_on[22:25, 10:13] = 14

    def mk(d):
        return xr.Dataset({k: (("y", "x"), v) for k, v in d.items()})

    ponds = mk(
        {
            "onset": pond_on,
            "months_seen": np.where(pond_on >= 0, 30, 0),
            "n_clear_obs": np.where(pond_on >= 0, 40, 0),
            "water_share": np.where(pond_on >= 0, 0.95, np.nan),
            "mndwi_mean": np.where(pond_on >= 0, 0.3, np.nan),
            "ndvi_mean": np.where(pond_on >= 0, 0.05, np.nan),
        }
    )
    bare = mk(
        {
            "onset": bare_on,
            "months_seen": np.where(bare_on >= 0, 24, 0),
            "n_clear_obs": np.where(bare_on >= 0, 50, 0),
            "bare_share": np.where(bare_on == 10, 0.97, np.where(bare_on == 3, 0.6, np.nan))
            + rng.normal(0, 0.01, shape),
            "green_share": green,
            "bsi_mean": np.where(bare_on >= 0, 0.2, np.nan),
            "ndvi_mean": np.where(bare_on >= 0, 0.2, np.nan),
        }
    )
    return {"ponds": ponds, "bare": bare}


def test_features_labels_fit_and_predict_separate_mine_from_paddy(tmp_path):
    grid = snapped_grid((436000.0, 2841000.0, 436400.0, 2841400.0), "EPSG:32647", 10.0)
    det = _det(grid.shape.yx)
    x = train.pixel_features(det["ponds"], det["bare"], np.full(grid.shape.yx, 15.0, np.float32), 10.0)
    assert x.shape == (*grid.shape.yx, len(train.FEATURES))
    # distance to bare ground is 0 on it and grows off it; the pond has bare ground within 100 m
    assert (
        x[10, 10, train.FEATURES.index("dist_to_bare_m")] == 0 and x[0, 0, train.FEATURES.index("dist_to_bare_m")] > 0
    )
    left, top = grid.affine.c, grid.affine.f
    clearing = shapely.box(left + 50, top - 260, left + 350, top - 50)  # rows 5-25, cols 5-34
    pond = shapely.box(left + 101, top - 249, left + 129, top - 221)  # inside rows 22-24, cols 10-12
    y = train.label_raster(
        grid, gpd.GeoDataFrame(geometry=[pond], crs=32647), gpd.GeoDataFrame(geometry=[clearing], crs=32647)
    )
    assert (y[22:25, 10:13] == 2).all() and y[10, 10] == 1 and y[35, 10] == 0
    xs, ys = train.training_pixels(x, y, np.random.default_rng(0))
    assert set(np.unique(ys)) == {0, 1, 2}
    bundle = train.save(tmp_path / "m.joblib", train.fit(xs, ys, max_iter=20), [], [], len(ys))
    loaded = train.load(tmp_path / "m.joblib")
    assert loaded["features"] == train.FEATURES and loaded["version"] == train.MODEL_VERSION
    assert len(loaded["training_data_sha256"]) == 64 and loaded["n_pixels"] == bundle["n_pixels"]
    pond_mask, clear_mask = train.predict_masks(loaded, x)
    assert pond_mask[22:25, 10:13].all() and clear_mask[8:20, 8:30].mean() > 0.95
    assert not clear_mask[30:39].any()  # the greening paddy is not a mine
    assert not pond_mask[0:5].any() and not clear_mask[0:5].any()  # never outside the candidates


def test_model_with_other_features_or_version_is_refused(tmp_path):
    import joblib

    joblib.dump({"version": train.MODEL_VERSION + 1, "features": train.FEATURES}, tmp_path / "old.joblib")
    with pytest.raises(ConfigError, match="retrain"):
        train.load(tmp_path / "old.joblib")
    with pytest.raises(ConfigError, match="retrain"):
        train.predict_masks({"features": ["ndvi"], "model": None}, np.zeros((2, 2, len(train.FEATURES))))
    with pytest.raises(ConfigError, match="does not exist"):
        train.load(tmp_path / "none.joblib")


def test_config_needs_a_model_path_for_classifier_model(tmp_path):
    base = {"aoi": tmp_path / "a.geojson", "period.start": "2021-01-01", "period.end": "2021-12-31"}
    with pytest.raises(ConfigError, match="model_path"):
        load_config(None, {**base, "classifier": "model"})
    assert load_config(None, {**base, "classifier": "model", "model_path": "m.joblib"}).model_path.is_absolute()
