"""Evidence pictures on small arrays: the stretch, the stored composite, chips around a site."""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image
from rasterio.crs import CRS

from pipeline import evidence, store
from pipeline.aoi import snapped_grid
from pipeline.store import EVIDENCE_BANDS, EVIDENCE_LAYERS, REFL_CODES


def test_draw_stretches_reflectance_the_same_way_every_year_and_keeps_nodata_apart():
    code = lambda r: 1 + round(r * REFL_CODES)  # noqa: E731  (as the count stage stores it)
    codes = np.full((5, 2, 3), code(0.11), np.uint8)
    codes[:, 0, 0] = 0
    codes[EVIDENCE_BANDS.index("red"), 1, 2] = code(0.5)  # brighter than white: clipped
    codes[EVIDENCE_BANDS.index("blue"), 0, 1] = 0  # one band without a view: no data in the picture
    image = evidence.draw(codes, ("red", "green", "blue"), 0.22)
    assert image.dtype == np.uint8 and image.shape == (3, 2, 3)
    assert (image[:, 0, :2] == 0).all() and (image[:, 0, 2] > 0).all() and (image[:, 1, :] > 0).all()
    assert image[0, 1, 2] == 255
    assert image[1, 1, 1] == 1 + round(254 * (round(0.11 * REFL_CODES) / REFL_CODES / 0.22) ** evidence.GAMMA)
    assert evidence.stretch(0.22)[code(0.0)] == 1  # black reflectance is not no data


def test_a_years_store_gives_back_the_codes_the_count_wrote(tmp_path):
    months = pd.date_range("2021-01-01", "2021-12-01", freq="MS")
    path = tmp_path / "s.zarr"
    store.create_layers(path, months, np.arange(4.0), np.arange(4.0), 4, 4, {}, evidence=True)
    codes = np.full((5, 4, 4), 1 + round(0.25 * REFL_CODES), np.uint8)
    codes[:, 0, 0] = 0
    store.write_evidence(store.open_layers(path, write=True), (0, 4), (0, 4), codes)
    np.testing.assert_array_equal(evidence.dry_season_codes(path), codes)
    assert set(store.open_layers(path)) >= set(EVIDENCE_LAYERS)


def test_chips_show_the_site_with_its_outline_before_and_after(tmp_path):
    grid = snapped_grid((400_000, 2_850_000, 401_000, 2_851_000), CRS.from_epsg(32647), 10.0)
    h, w = grid.shape.yx
    forest = np.zeros((3, h, w), np.uint8) + np.array([40, 90, 40], np.uint8)[:, None, None]
    mined = forest.copy()
    mined[:, 40:60, 40:60] = np.array([230, 150, 110], np.uint8)[:, None, None]
    pictures = [
        evidence.YearPictures(2020, {"truecolour": forest}),
        evidence.YearPictures(2023, {"truecolour": mined}),
    ]
    x0, y1 = grid.affine * (40, 40)
    site = shapely.box(x0, y1 - 200, x0 + 200, y1)
    sites = gpd.GeoDataFrame({"site_id": [7, 8], "first_year": [2022, 2020]}, geometry=[site, site], crs=grid.crs)
    written = evidence.write_site_chips(tmp_path, sites, grid, pictures, margin_m=100)
    links = evidence.chip_links(sites, [p.year for p in pictures])
    assert links == {7: evidence.chip_paths(7), 8: ("", evidence.chip_paths(8)[1])}  # nothing before 2020
    assert sorted(written) == sorted(tmp_path / p for pair in links.values() for p in pair if p)
    before = np.asarray(Image.open(io.BytesIO((tmp_path / links[7][0]).read_bytes())).convert("RGB"))
    after = np.asarray(Image.open(tmp_path / links[7][1]).convert("RGB"))
    side = (200 + 2 * 100) // 10 * evidence.CHIP_SCALE
    assert before.shape == after.shape == (side, side, 3)
    assert (after == evidence.OUTLINE).all(axis=-1).sum() >= 4 * side // 2  # round the site, 200 m of 400
    centre = after[side // 2, side // 2]
    assert tuple(centre) == (230, 150, 110) and tuple(before[side // 2, side // 2]) == (40, 90, 40)
