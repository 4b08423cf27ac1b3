"""Whole runs on small hand-built windows of one confounder each: what the detector must not call a mine.

The windows are drawn here, not by the simulator: water is mixed into each pixel by the share of it the
channel or pond covers, and every scene lands a few metres off the grid, as real scenes do.
"""

from datetime import datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import rasterize

from pipeline.config import load_config
from pipeline.run import run
from tests.support import ALGAL_WATER, FOREST, LATERITE, MILKY_WATER, MUD, RIVER_WATER, write_aoi_file, write_catalog

BOUNDS = (436000.0, 2841000.0, 437200.0, 2842000.0)  # 1.2 km x 1 km
SHAPE = (100, 120)


def cover_fraction(geom, dx=0.0, dy=0.0, sub=5) -> np.ndarray:
    """Share of each 10 m pixel of the window that ``geom``, moved by (dx, dy) metres, covers."""
    left, _, _, top = BOUNDS
    fine = rasterize(
        [shapely.affinity.translate(geom, dx, dy)],
        out_shape=(SHAPE[0] * sub, SHAPE[1] * sub),
        transform=Affine(10 / sub, 0, left, 0, -10 / sub, top),
    ).astype(np.float32)
    return fine.reshape(SHAPE[0], sub, SHAPE[1], sub).mean(axis=(1, 3))


def channel(width_m: float, wavelength_m: float, amplitude_m: float, y_m: float) -> shapely.Geometry:
    """A meandering channel ``width_m`` wide running west to east across the window."""
    left, _, right, top = BOUNDS
    x = np.linspace(left - 50, right + 50, 400)
    y = top - y_m + amplitude_m * np.sin(2 * np.pi * (x - left) / wavelength_m)
    return shapely.LineString(np.c_[x, y]).buffer(width_m / 2, cap_style="flat")


def mix(layers, when) -> dict:
    """Reflectance of forest under ``layers``: (fraction, spectrum) painted in order."""
    refl = {b: np.full(SHAPE, v, np.float32) for b, v in FOREST.items()}
    for frac, spec in layers:
        for b, v in spec.items():
            refl[b] = refl[b] * (1 - frac) + v * frac
    return refl


def valley_dem(floor_m: float, side_slope: float, y_m: float) -> np.ndarray:
    """Hillsides rising ``side_slope`` metres per metre from a flat floor ``floor_m`` wide along y_m."""
    rows = (np.arange(SHAPE[0])[:, None] + 0.5) * 10.0
    d = np.maximum(np.abs(rows - y_m) - floor_m / 2, 0)
    return np.broadcast_to(1300 + side_slope * d, SHAPE).astype(np.float32).copy()


def run_window(tmp_path, scene_layers, dem):
    """Monthly clear scenes over 2021-2023, each shifted by a few metres; returns the run's layers."""
    rng = np.random.default_rng(1)
    scenes = []
    for year in (2021, 2022, 2023):
        for month in range(1, 13):
            when = datetime(year, month, 15)
            dx, dy = rng.normal(0, 6.0 if year < 2021 else 3.0, 2)  # misregistration, as the archive has
            scenes.append({"datetime": when, "refl": mix(scene_layers(when, dx, dy), when)})
    cat = write_catalog(tmp_path / "cat", scenes, bounds=BOUNDS, dem=dem)
    aoi = write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=20.0)
    cfg = load_config(
        None,
        {
            "aoi": aoi,
            "source.catalog": cat,
            "period.start": "2021-01-01",
            "period.end": "2023-12-31",
            "out": tmp_path / "run",
        },
    )
    run(cfg)
    return {
        layer: gpd.read_file(tmp_path / "run" / "footprints.gpkg", layer=layer)
        for layer in ("ponds", "clearings", "sites")
    }


@pytest.mark.parametrize("width_m", [10.0, 50.0])
def test_a_river_beside_a_mine_gives_only_the_mine(tmp_path, width_m):
    # the river swells a third in the monsoon; the valley floor is flat for the wide river, a V for the stream
    river = {w: channel(w, 700.0, 60.0, 700.0) for w in (width_m, width_m * 4 / 3)}
    hill = shapely.box(436700, 2841700, 437000, 2841950)  # a leaching site on the hillside above
    pond = shapely.box(436760, 2841750, 436800, 2841790)

    def layers(when, dx, dy):
        wet = when.month in (6, 7, 8, 9, 10)
        out = [(cover_fraction(river[width_m * 4 / 3 if wet else width_m], dx, dy), RIVER_WATER)]
        if when >= datetime(2021, 11, 1):
            out.append((cover_fraction(hill, dx, dy), LATERITE))
        if when >= datetime(2022, 2, 1):
            out.append((cover_fraction(pond, dx, dy), MILKY_WATER))
        return out

    got = run_window(tmp_path, layers, valley_dem(200.0 if width_m > 20 else 0.0, 0.35, 700.0))
    assert len(got["sites"]) == 1  # the mine, and nothing on the river
    ponds = got["ponds"]
    assert len(ponds) >= 1 and ponds.intersects(pond.buffer(20)).all()
    river_near = river[width_m * 4 / 3].buffer(30)
    assert not ponds.intersects(river_near).any()


def test_a_fish_pond_farm_on_the_valley_floor_gives_no_site(tmp_path):
    # eight ponds of 30 x 40 m in two rows, green algal water, drained to mud each January and February
    farm = shapely.union_all(
        [
            shapely.box(436300 + 45 * i, 2841400 + 55 * j, 436330 + 45 * i, 2841440 + 55 * j)
            for i in range(4)
            for j in range(2)
        ]
    )

    def layers(when, dx, dy):
        return [(cover_fraction(farm, dx, dy), MUD if when.month in (1, 2) else ALGAL_WATER)]

    got = run_window(tmp_path, layers, valley_dem(600.0, 0.35, 500.0))
    assert got["sites"].empty and got["ponds"].empty


def test_a_road_cut_across_the_hillside_gives_no_site(tmp_path):
    # a laterite road cut with its cut and fill slopes 24 m wide, two hairpins, bare since March 2021
    left, _, _, top = BOUNDS
    path = shapely.LineString(
        [(left + 100, top - 150), (left + 1000, top - 250), (left + 150, top - 400), (left + 1050, top - 550)]
    )
    road = path.buffer(12.0, cap_style="flat")
    yy = (np.arange(SHAPE[0])[:, None] + 0.5) * 10.0

    def layers(when, dx, dy):
        return [(cover_fraction(road, dx, dy), LATERITE)] if when >= datetime(2021, 3, 1) else []

    dem = np.broadcast_to(1300 + 0.3 * (1000 - yy), SHAPE).astype(np.float32).copy()  # a 17 degree hillside
    got = run_window(tmp_path, layers, dem)
    assert got["sites"].empty
