"""The local catalog source and loader, on catalogs written by the fixture builders."""

from datetime import date, datetime

import numpy as np
import pytest
from dask.callbacks import Callback

from pipeline.aoi import load_aoi
from pipeline.errors import NoScenesError
from pipeline.lab import xarray_reference as xr_ref
from pipeline.lab.xarray_reference import onset_maps
from pipeline.rules import ClearingRules, PondRules
from pipeline.sources.loading import load_dem, load_reflectance, usable_scenes
from pipeline.sources.local_stac import LocalCatalogSource
from tests.support import FOREST, uniform, write_aoi_file, write_catalog

BOUNDS = (436000.0, 2841000.0, 436400.0, 2841400.0)  # 400 m: 40 x 40 px at 10 m


def _scene(when, **kw):
    return {"datetime": when, "refl": uniform(FOREST, (40, 40)), **kw}


def _load(tmp_path, scenes, bounds=BOUNDS, epsg=32647):
    cat = write_catalog(tmp_path / "cat", scenes, bounds=bounds, epsg=epsg)
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    found = LocalCatalogSource(cat).search(aoi.geometry, date(2020, 1, 1), date(2023, 12, 31), 100)
    return aoi, found, load_reflectance(found.scenes, aoi.grid, ["red", "nir", "swir16"], 256)


def test_baseline_0400_offset_gives_the_same_reflectance(tmp_path):
    # same ground before and after 25 Jan 2022: the DN differ by 1000, the reflectance must not
    aoi, _, cube = _load(tmp_path, [_scene(datetime(2022, 1, 10)), _scene(datetime(2022, 2, 10))])
    red = cube["red"].values
    assert red.dtype == np.float32
    np.testing.assert_allclose(red[0], FOREST["red"], atol=1e-4)
    np.testing.assert_allclose(red[1], FOREST["red"], atol=1e-4)


def test_offset_falls_back_to_the_baseline_without_raster_bands(tmp_path):
    _, _, cube = _load(
        tmp_path, [_scene(datetime(2022, 3, 1), raster_bands=False), _scene(datetime(2021, 3, 1), raster_bands=False)]
    )
    np.testing.assert_allclose(cube["nir"].values, FOREST["nir"], atol=1e-4)


def test_a_20m_scl_pixel_covers_exactly_its_four_10m_pixels(tmp_path):
    scl = np.full((20, 20), 4, np.uint8)
    scl[7, 11] = 9
    aoi, _, cube = _load(tmp_path, [_scene(datetime(2021, 5, 1), scl=scl)])
    cloud = cube["scl"].values[0] == 9
    row, col = int((aoi.grid.affine.f - (BOUNDS[3] - 7 * 20)) / 10), int((BOUNDS[0] + 11 * 20 - aoi.grid.affine.c) / 10)
    assert cloud.sum() == 4 and cloud[row : row + 2, col : col + 2].all()
    assert aoi.grid.affine.c % 20 == 0 and aoi.grid.affine.f % 20 == 0  # the grid is on the 20 m lattice


def aoi_shape(tmp_path):
    return load_aoi(tmp_path / "aoi.geojson").grid.shape.yx


def test_scenes_in_another_utm_zone_are_reprojected(tmp_path):
    from pyproj import Transformer

    t = Transformer.from_crs(32647, 32646, always_xy=True)
    x0, y0 = t.transform(BOUNDS[0] - 200, BOUNDS[1] - 200)
    x0, y0 = round(x0 / 20) * 20, round(y0 / 20) * 20
    bounds46 = (x0, y0, x0 + 880, y0 + 880)
    scenes = [{"datetime": datetime(2021, 5, 1), "refl": uniform(FOREST, (88, 88))}]
    _, found, cube = _load(tmp_path, scenes, bounds=bounds46, epsg=32646)
    assert cube.sizes["y"] == aoi_shape(tmp_path)[0]
    assert not np.isnan(cube["nir"].values).any()
    assert np.nanmean(cube["nir"].values) == pytest.approx(FOREST["nir"], abs=1e-3)


def test_building_the_graph_reads_no_pixels(tmp_path):
    class Count(Callback):
        n = 0

        def _start(self, dsk):
            Count.n += 1

    scenes = [_scene(datetime(2021, m, 1)) for m in range(1, 7)]
    with Count():
        aoi, found, cube = _load(tmp_path, scenes)
        valid = xr_ref.clear_mask(cube, [0, 3, 8, 9, 10], 3, ["red", "nir", "swir16"])
        cube = cube.assign(green=cube["red"], blue=cube["red"])
        ind = xr_ref.all_indices(cube)
        water = xr_ref.pond_like(ind, valid, PondRules(), cube["nir"])
        m = xr_ref.monthly_counts(
            {"valid": valid, "pond": water, "bare": xr_ref.bare_like(ind, valid, ClearingRules(), water)},
            date(2021, 1, 1),
            date(2021, 12, 31),
        )
        onset_maps(m["valid"], m["pond"], 12, 0.6, 3)
    assert Count.n == 0


def test_truncated_and_incomplete_scenes_are_skipped_with_a_reason(tmp_path):
    scenes = [_scene(datetime(2021, m, 1)) for m in (1, 2, 3)]
    cat = write_catalog(tmp_path / "cat", scenes, bounds=BOUNDS)
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    found = LocalCatalogSource(cat).search(aoi.geometry, date(2021, 1, 1), date(2021, 12, 31), 100)
    nir = found.scenes[0].assets["nir"].get_absolute_href()
    data = open(nir, "rb").read()
    open(nir, "wb").write(data[: len(data) // 2])
    del found.scenes[1].assets["swir16"]
    good, skipped = usable_scenes(found.scenes, ["red", "nir", "swir16", "scl"])
    assert [s.id for s in good] == [found.scenes[2].id]
    assert "nir" in skipped[0]["reason"] and "missing assets ['swir16']" in skipped[1]["reason"]


def test_search_filters_period_and_cloud_and_explains_an_aoi_outside(tmp_path):
    scenes = [_scene(datetime(2021, 1, 1), cloud_cover=95), _scene(datetime(2021, 2, 1)), _scene(datetime(2019, 2, 1))]
    cat = write_catalog(tmp_path / "cat", scenes, bounds=BOUNDS)
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    found = LocalCatalogSource(cat).search(aoi.geometry, date(2021, 1, 1), date(2021, 12, 31), 90)
    assert len(found.scenes) == 1 and "cloud_cover" in found.skipped[0]["reason"]
    far = load_aoi(write_aoi_file(tmp_path / "far.geojson", (500000, 2841000, 500400, 2841400)))
    with pytest.raises(NoScenesError, match="outside every scene"):
        LocalCatalogSource(cat).search(far.geometry, date(2021, 1, 1), date(2021, 12, 31), 90)
    with pytest.raises(NoScenesError, match="widen the period"):
        LocalCatalogSource(cat).search(aoi.geometry, date(2022, 1, 1), date(2022, 12, 31), 90)


def test_dem_from_epsg4326_lands_on_the_grid(tmp_path):
    yy, xx = np.mgrid[0:40, 0:40]
    cat = write_catalog(
        tmp_path / "cat", [_scene(datetime(2021, 1, 1))], bounds=BOUNDS, dem=(1000 + 2.0 * yy).astype(np.float32)
    )
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    found = LocalCatalogSource(cat).search(aoi.geometry, date(2021, 1, 1), date(2021, 12, 31), 100)
    dem = load_dem(found.dem, aoi.grid)
    assert dem.shape == aoi.grid.shape.yx and not np.isnan(dem).any()
    assert np.median(np.diff(dem[5:-5, 10])) == pytest.approx(2.0, abs=0.2)  # rises 2 m per row southward


def test_upsample2_matches_gdal_bilinear_and_nearest():
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    from pipeline.sources.loading import upsample2

    rng = np.random.default_rng(3)
    src = rng.random((12, 12)).astype(np.float32)
    gdal = np.zeros((24, 24), np.float32)
    kw = dict(
        src_transform=Affine(20, 0, 0, 0, -20, 240),
        src_crs="EPSG:32647",
        dst_transform=Affine(10, 0, 0, 0, -10, 240),
        dst_crs="EPSG:32647",
    )
    reproject(src, gdal, resampling=Resampling.bilinear, **kw)
    ours = upsample2(np.pad(src, 1, mode="edge")[None], bilinear=True)[0]
    np.testing.assert_allclose(ours[1:-1, 1:-1], gdal[1:-1, 1:-1], atol=1e-5)  # interior: same weights
    classes = rng.integers(0, 12, (12, 12)).astype(np.uint8)
    near = upsample2(np.pad(classes, 1, mode="edge")[None], bilinear=False)[0]
    assert (near[::2, ::2] == classes).all() and (near[1::2, 1::2] == classes).all()
