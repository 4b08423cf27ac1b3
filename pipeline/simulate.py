"""The simulated AOI: Sentinel-2 L2A-like scenes of a window of the Pang War pond field, with known truth.

It writes what a real offline mirror would hold (contract 3: a local STAC catalog laid out like Earth
Search v1 ``sentinel-2-l2a`` items plus a ``cop-dem-glo-30`` DEM) and what an analyst would have labelled
(contract 5: ``truth.gpkg``), so the whole pipeline and its accuracy tests run offline.

The ponds stand exactly on the real mapped pools, and the simulation reproduces on purpose what makes
the job hard in Kachin:
- ponds are 8-40 m across, so most are partial pixels whose spectrum is mixed with the bund and slope;
- the monsoon (June-September) leaves few clear views, cloud edges are thin enough to slip past SCL,
  cloud shadows are not all flagged, and the burning season (March-April) adds haze;
- mountains under a low winter sun put north-west slopes in deep shadow;
- bare ground that is not mining: swidden fields (cut, burnt, cropped, regrown), landslide scars,
  dry-season paddies on the valley floor, and a turbid river;
- processing baseline 04.00 (25 Jan 2022) shifts every DN by +1000, as in the real archive.

Everything is drawn from ``numpy.random.Generator`` streams keyed by (seed, purpose), so the same seed
gives the same bytes, and changing one part of the landscape does not reshuffle the others.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import rasterio
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from shapely import affinity

from pipeline.aoi import area_m2, snapped_grid, utm_crs, write_aoi
from pipeline.errors import ConfigError, OutputError
from pipeline.vectorize import link_sites

log = logging.getLogger(__name__)

SIMULATOR_VERSION = 2  # bump when the same parameters would give different output

# ------------------------------------------------------------------------------------------------ place

SEED0_CENTRE = (436000.0, 2842000.0)  # centre of the densest 6 km window of the pool field (643 pools)
POOLS_PER_4KM2 = 30  # a window of another seed must hold at least this many pools per 2 km x 2 km
IMAGE_MARGIN_M = 300.0  # the AOI reprojected to lon/lat and back, snapped outward, still lies inside
SITE_LINK_M = 200.0  # one pool cluster at this single-linkage distance is one mining site
# Clearings stay this far from other sites. A 10 m sensor places an edge only to within a pixel or
# so, so sites whose gap is within a few pixels of the linkage distance are a coin toss even for an
# analyst; the simulator keeps its truth unambiguous with a 3-pixel margin.
SITE_GAP_M = SITE_LINK_M + 30.0
SNAP_M = 20.0
RESOLUTION_M = 10.0

# ------------------------------------------------------------------------------------------ the sensor

MGRS_TILE = "47RQL"
RELATIVE_ORBIT = 104
OVERPASS_SOLAR_HOUR = 10.5  # Sentinel-2 mean local solar time at the descending node
OVERPASS_UTC = (4, 7, 21)  # 10:30 solar time at 98.3 E
# The neighbouring track to the west (scenario two_orbits). Sentinel-2 makes 143 orbits in its 10-day
# cycle, 25.2 degrees of longitude apart: the track next to R104 on the west is flown 43 orbits (3 days)
# later, R147 = R004. Tracks lie 2.5 degrees (250 km at 26 N) apart and the swath is 290 km wide, so
# the AOI sits in the ~40 km overlap, near R004's eastern swath edge, seen ~10 degrees off nadir.
SECOND_ORBIT = 4
SECOND_ORBIT_DAYS = 3
SECOND_ORBIT_UTC = (4, 17, 21)  # its nadir is 2.5 degrees further west: 10 minutes later
SECOND_ORBIT_SOLAR_HOUR = OVERPASS_SOLAR_HOUR + 10 / 60  # the AOI is east of R004's nadir, west of R104's
SECOND_ORBIT_EDGE = (0.75, -12.0)  # swath edge: share of the image width west of it (top row), heading (deg)
S2_COLLECTION = "sentinel-2-l2a"
DEM_COLLECTION = "cop-dem-glo-30"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
DN_SCALE = 0.0001
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
]


@dataclass(frozen=True)
class Band:
    key: str  # Earth Search v1 asset key
    file: str
    gsd: int
    title: str
    centre_um: float
    fwhm_um: float


BANDS = (
    Band("blue", "B02", 10, "Blue (band 2)", 0.49, 0.098),
    Band("green", "B03", 10, "Green (band 3)", 0.56, 0.045),
    Band("red", "B04", 10, "Red (band 4)", 0.665, 0.038),
    Band("rededge1", "B05", 20, "Red edge 1 (band 5)", 0.704, 0.019),
    Band("rededge2", "B06", 20, "Red edge 2 (band 6)", 0.74, 0.018),
    Band("rededge3", "B07", 20, "Red edge 3 (band 7)", 0.783, 0.028),
    Band("nir", "B08", 10, "NIR 1 (band 8)", 0.842, 0.145),
    Band("nir08", "B8A", 20, "NIR 2 (band 8A)", 0.865, 0.033),
    Band("swir16", "B11", 20, "SWIR 1 (band 11)", 1.61, 0.143),
    Band("swir22", "B12", 20, "SWIR 2 (band 12)", 2.19, 0.242),
)
BLUE, GREEN, RED, NIR = 0, 1, 2, 6
BANDS_20M = [i for i, b in enumerate(BANDS) if b.gsd == 20]

# Surface reflectance of each cover, in BANDS order (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12), after
# typical Sentinel-2 L2A values and library spectra (USGS splib07, ECOSTRESS): vegetation with a red edge
# and SWIR water absorption; laterite with the iron-oxide rise from green to red and high SWIR; clay-laden
# ("milky") water bright in green/red and dark beyond 0.8 um; a blue pond liner bright in blue only.
SPECTRA = {
    "forest":        (0.025, 0.045, 0.025, 0.070, 0.200, 0.260, 0.290, 0.300, 0.140, 0.060),
    "shrub":         (0.035, 0.065, 0.045, 0.100, 0.220, 0.270, 0.300, 0.310, 0.200, 0.100),
    "rice":          (0.035, 0.070, 0.040, 0.100, 0.250, 0.320, 0.360, 0.370, 0.200, 0.090),
    "stubble":       (0.070, 0.090, 0.110, 0.130, 0.160, 0.180, 0.200, 0.210, 0.270, 0.200),
    "laterite":      (0.060, 0.100, 0.180, 0.220, 0.250, 0.270, 0.280, 0.290, 0.360, 0.270),
    "grey_soil":     (0.100, 0.130, 0.150, 0.170, 0.190, 0.200, 0.210, 0.220, 0.280, 0.220),
    "ash":           (0.030, 0.035, 0.040, 0.045, 0.050, 0.055, 0.060, 0.065, 0.080, 0.070),
    "river_water":   (0.060, 0.080, 0.070, 0.060, 0.035, 0.030, 0.025, 0.020, 0.010, 0.008),
    "flooded_paddy": (0.060, 0.075, 0.065, 0.065, 0.055, 0.050, 0.045, 0.042, 0.025, 0.018),
    "milky_water":   (0.140, 0.180, 0.170, 0.130, 0.080, 0.060, 0.050, 0.040, 0.015, 0.010),
    "blue_liner":    (0.160, 0.120, 0.070, 0.050, 0.030, 0.025, 0.020, 0.020, 0.010, 0.008),
    "plastic_white": (0.550, 0.570, 0.580, 0.580, 0.580, 0.580, 0.580, 0.570, 0.450, 0.380),
    "plastic_black": (0.040, 0.040, 0.040, 0.040, 0.040, 0.045, 0.045, 0.045, 0.050, 0.045),
    "mud":           (0.080, 0.100, 0.120, 0.130, 0.140, 0.150, 0.160, 0.160, 0.180, 0.140),
}
COVERS = list(SPECTRA)
ENDMEMBERS = np.array([SPECTRA[c] for c in COVERS], dtype=np.float32)  # (n_covers, n_bands)
COVER = {name: i for i, name in enumerate(COVERS)}  # cover name -> row of ENDMEMBERS
POND_COLOURS = ("milky", "blue", "plastic_white", "plastic_black")
POND_COLOUR_SHARES = (0.60, 0.25, 0.075, 0.075)
POND_COVER = {"milky": COVER["milky_water"], "blue": COVER["blue_liner"], "plastic_white": COVER["plastic_white"],
              "plastic_black": COVER["plastic_black"]}
DETECTABLE_AREA_M2 = 300.0

CLOUD_SHAPE = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.99, 0.98, 0.97, 0.80, 0.60], dtype=np.float32)
CIRRUS_SHAPE = np.array([0.40, 0.38, 0.36, 0.36, 0.35, 0.35, 0.34, 0.34, 0.30, 0.26], dtype=np.float32)
# smoke from the March-April burning: path radiance the atmospheric correction leaves, strongest in blue
HAZE_SHAPE = np.array([0.050, 0.040, 0.030, 0.025, 0.020, 0.017, 0.015, 0.014, 0.006, 0.003], dtype=np.float32)
# Seen from the west under a south-eastern morning sun (forward scatter) more of the canopy's shade is
# in view than from R104 to the east: a few percent darker, most in the visible (canopy BRDF)
SECOND_ORBIT_VIEW_GAIN = np.array([0.93, 0.93, 0.93, 0.94, 0.95, 0.96, 0.96, 0.96, 0.95, 0.95], dtype=np.float32)
PIXEL_NOISE = 0.005
DIFFUSE_SKY = 0.15  # share of irradiance that still reaches slopes facing away from the sun

# chance that a scene of each month is cloudy at all: the monsoon nearly always is
CLOUDY_CHANCE = {1: .25, 2: .25, 3: .3, 4: .4, 5: .7, 6: .95, 7: 1., 8: 1., 9: .95, 10: .6, 11: .3, 12: .25}
MONSOON = (6, 7, 8, 9)

# day of year -> weights of (stubble, flooded_paddy, rice): flooded and transplanted in June,
# green July-October, harvested October-November, stubble through the dry season
PADDY_CALENDAR = np.array([
    (0, 1.0, 0.0, 0.0), (135, 1.0, 0.0, 0.0), (160, 0.1, 0.9, 0.0), (190, 0.0, 0.7, 0.3),
    (230, 0.0, 0.2, 0.8), (275, 0.0, 0.0, 1.0), (300, 0.4, 0.0, 0.6), (320, 1.0, 0.0, 0.0), (366, 1.0, 0.0, 0.0),
])

SWIDDEN_PER_KM2_YEAR = 0.25
LANDSLIDES_PER_KM2_YEAR = 0.12
COUP = date(2021, 2, 1)
AFTER_COUP_RATE = 3.0  # new sites per day after the coup relative to before (mining grew five-fold)
PRE_PERIOD_SHARE = 0.15
ABANDON_SHARE = 0.15
NEVER = 1e9  # a day (since 1970) that never comes


@dataclass(frozen=True)
class Scenario:
    """Harder variants of the simulated AOI (issue 4). Every field's default is the standard landscape,
    which stays byte-identical: a scenario only changes thresholds of draws the standard one makes
    anyway, or adds draws from streams of its own."""
    pond_max_m: float | None = None  # cap a pond's edge: 10 m makes single-pixel (or smaller) pools
    wetter: float = 0.0  # added to each month's chance of a cloudy scene: 0.35 is a very wet year
    haze: float = 0.0  # smoke/haze (0-1, the burning season's peak is ~1) added to every scene
    village_share: float = 0.0  # share of sites with a village and its road built beside the mine
    abandon_share: float = ABANDON_SHARE  # sites abandoned after 1-3 years, then regrowing
    pre_period_share: float = PRE_PERIOD_SHARE  # sites already working before the period starts
    second_orbit: bool = False  # R004 also passes, 3 days after R104: other sun and view, half-swath scenes
    # Pools this close are one site in truth, and a clearing keeps this far from other sites. A dense
    # belt links at less than the pipeline's 200 m: truth sites 120-200 m apart, which it should merge.
    site_link_m: float = SITE_LINK_M
    site_gap_m: float = SITE_GAP_M
    swidden_rate: float = 1.0  # times the standard number of swidden fields cut each year
    landslide_rate: float = 1.0  # times the standard number of landslides each year
    hillside_slope_deg: float = 20.0  # median slope of the hillsides (the DEM's relief is scaled to it)
    diffuse_sky: float = DIFFUSE_SKY  # skylight share on slopes away from the sun: less in deep valleys

    def changed(self) -> dict:
        """The fields that differ from the standard landscape (what goes into the catalog's parameters)."""
        base = Scenario()
        return {k: v for k, v in self.__dict__.items() if v != getattr(base, k)}


SCENARIOS = {
    "standard": Scenario(),
    "single_pixel_ponds": Scenario(pond_max_m=10.0),
    "wet": Scenario(wetter=0.35),
    "haze": Scenario(haze=0.6),
    "villages": Scenario(village_share=0.5),
    "regrowth": Scenario(abandon_share=0.6),
    "pre_period": Scenario(pre_period_share=0.6),
    "two_orbits": Scenario(second_orbit=True),
    "dense": Scenario(site_link_m=120.0, site_gap_m=150.0),
    "swidden_heavy": Scenario(swidden_rate=4.0),
    "landslide_heavy": Scenario(landslide_rate=4.0),
    "steep": Scenario(hillside_slope_deg=30.0, diffuse_sky=0.08),
    "flat": Scenario(hillside_slope_deg=10.0),
}
# two_orbits adds data rather than difficulty (and doubles the scenes), flat makes it easier: both stay out
SCENARIOS["all"] = Scenario(pond_max_m=10.0, wetter=0.35, haze=0.6, village_share=0.5, abandon_share=0.6,
                            pre_period_share=0.6, site_link_m=120.0, site_gap_m=150.0, swidden_rate=4.0,
                            landslide_rate=4.0, hillside_slope_deg=30.0, diffuse_sky=0.08)

# separate random streams, so that e.g. more landslides do not move the clouds
STREAM = {name: i for i, name in enumerate(
    ["window", "river", "terrain", "background", "sites", "swidden", "landslide", "paddy", "noise", "scene", "village",
     "orbit2"])}


@dataclass(frozen=True)
class SimulatedAOI:
    catalog: Path  # out/catalog.json
    truth: Path  # out/truth.gpkg
    aoi: Path  # out/aoi.geojson
    start: date  # Jan 1 of start_year
    end: date  # Dec 31 of end_year


def _rng(seed: int, purpose: str, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM[purpose], *more])


def _day(d: date) -> float:
    """Days since 1970-01-01: the time axis of every timeline below."""
    return float((d - date(1970, 1, 1)).days)


def _date(day: float) -> date:
    return date(1970, 1, 1) + timedelta(days=int(math.floor(day)))


def _ramp(t, t0, t1):
    """0 before t0, 1 after t1, linear between."""
    return np.clip((t - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)


# ------------------------------------------------------------------------------------------ the window

def load_pools() -> gpd.GeoDataFrame:
    """The 2,497 mapped Pang War pools (Earth Genome, MIT), EPSG:32647, with ``type`` square|circular."""
    with files("pipeline").joinpath("data/pang_war_pools.csv").open() as f:
        df = pd.read_csv(f)
    return gpd.GeoDataFrame({"type": df["type"].to_numpy()}, geometry=shapely.from_wkt(df["geom"]), crs=32647)


def choose_window(pools: gpd.GeoDataFrame, seed: int, size_m: float) -> tuple[float, float, float, float]:
    """The AOI square: seed 0 on the densest part of the field, other seeds near a random real pool."""
    xy = shapely.get_coordinates(pools.geometry.values)

    def snapped(cx, cy):
        left, bottom = (math.floor((c - size_m / 2) / SNAP_M) * SNAP_M for c in (cx, cy))
        return left, bottom, left + size_m, bottom + size_m

    def count(w):
        return int(((xy[:, 0] >= w[0]) & (xy[:, 0] < w[2]) & (xy[:, 1] >= w[1]) & (xy[:, 1] < w[3])).sum())

    if seed == 0:
        return snapped(*SEED0_CENTRE)
    need = POOLS_PER_4KM2 * (size_m / 2000.0) ** 2
    rng = _rng(seed, "window")
    best, best_n = None, -1
    for _ in range(300):
        cx, cy = xy[rng.integers(len(xy))] + rng.normal(0.0, 0.15 * size_m, 2)
        w = snapped(cx, cy)
        n = count(w)
        if n >= need:
            return w
        if n > best_n:
            best, best_n = w, n
    log.warning("no %.1f km window with %d pools found for seed %d; using one with %d", size_m / 1000, need,
                seed, best_n)
    return best


# ----------------------------------------------------------------------------------------- the terrain

def smooth_field(rng: np.random.Generator, shape: tuple[int, int], res_m: float, scale_m: float,
                 beta: float = 3.0) -> np.ndarray:
    """A periodic Gaussian random field (mean 0, std 1) with a power-law spectrum (power ~ k^-beta),
    flattened at wavelengths longer than ``scale_m``: fractal terrain, cloud decks, textures."""
    ky = np.fft.fftfreq(shape[0], res_m)[:, None]
    kx = np.fft.rfftfreq(shape[1], res_m)[None, :]
    amp = (kx ** 2 + ky ** 2 + scale_m ** -2) ** (-beta / 4.0)
    noise = rng.standard_normal((2, *amp.shape), dtype=np.float32)
    spectrum = amp * (noise[0] + 1j * noise[1])
    spectrum[0, 0] = 0.0
    f = np.fft.irfft2(spectrum, s=shape)
    return ((f - f.mean()) / f.std()).astype(np.float32)


def river_course(rng: np.random.Generator, bounds, pools_xy: np.ndarray, keep_clear_m: float) -> shapely.LineString:
    """A meandering river centreline across the image, the one of a few candidates that passes the
    fewest pools (leachate ponds are dug on hillsides, not in the river)."""
    left, bottom, right, top = bounds
    cx, cy, size = (left + right) / 2, (bottom + top) / 2, right - left
    s = np.arange(-size, size, 20.0)
    pts = shapely.points(pools_xy)
    best, best_hits = None, None
    for _ in range(24):
        theta = rng.uniform(0, math.pi)
        lateral = np.full_like(s, rng.uniform(-0.3, 0.3) * size)
        for wavelength in rng.uniform(700, 3000, 3):
            lateral += wavelength * rng.uniform(0.04, 0.1) * np.sin(2 * math.pi * (s / wavelength + rng.random()))
        x = cx + s * math.cos(theta) - lateral * math.sin(theta)
        y = cy + s * math.sin(theta) + lateral * math.cos(theta)
        line = shapely.LineString(np.c_[x, y])
        hits = int(shapely.dwithin(pts, line, keep_clear_m).sum()) if len(pools_xy) else 0
        if best_hits is None or hits < best_hits:
            best, best_hits = line, hits
    return best


def river_channel(rng: np.random.Generator, centreline: shapely.LineString) -> shapely.Geometry:
    """The wet channel, 25-60 m wide, widening and narrowing along its course."""
    xy = shapely.get_coordinates(centreline)
    tangent = np.gradient(xy, axis=0)
    normal = np.c_[-tangent[:, 1], tangent[:, 0]] / np.hypot(*tangent.T)[:, None]
    along = np.r_[0, np.cumsum(np.hypot(*np.diff(xy, axis=0).T))]
    mean_width = rng.uniform(30, 50)
    width = np.clip(mean_width * (1 + 0.25 * np.sin(2 * math.pi * along / rng.uniform(800, 2000))), 25, 60)
    side = normal * width[:, None] / 2
    ring = np.r_[xy + side, (xy - side)[::-1]]
    return shapely.make_valid(shapely.Polygon(ring))


def valley_terrain(rng: np.random.Generator, grid: GeoBox, river: shapely.LineString, floor_m: float,
                   slope_deg: float = 20.0) -> np.ndarray:
    """Elevation (m): ridged mountains rising several hundred metres from a flat valley floor ``floor_m``
    either side of the river, scaled so that the median hillside slope is ``slope_deg`` (20: hillside
    slopes are mostly 10-35 degrees)."""
    shape, res = grid.shape.yx, grid.resolution.x
    on_river = rasterize([river], out_shape=shape, transform=grid.affine, all_touched=True).astype(bool)
    distance = ndimage.distance_transform_edt(~on_river) * res
    rise = 1.0 - np.exp(-np.maximum(distance - floor_m, 0) / 2000.0)
    foot = _ramp(distance, floor_m, floor_m + 300)  # the floor stays flat: paddies need it
    # ridged multifractal: octaves of (1 - |noise|)^2 give sharp crests and spurs ~1-3 km apart
    ridges = sum(weight * (1.0 - np.abs(smooth_field(rng, shape, res, scale, beta=5.0) / 2.0)) ** 2
                 for scale, weight in ((3000, 1.0), (1500, 0.5), (750, 0.25)))
    relief = 1500 * rise + foot * 600 * (ridges - ridges.min())
    dz_dy, dz_dx = np.gradient(relief, res)
    hillside = distance > floor_m + 300
    gain = math.tan(math.radians(slope_deg)) / np.median(np.hypot(dz_dx, dz_dy)[hillside])
    # metre-scale roughness: rock outcrops, tree throw, terraces
    relief = gain * relief + 0.5 * foot * smooth_field(rng, shape, res, 150, beta=3.0)
    # a gentle fall along the valley so the river has somewhere to go
    xy = shapely.get_coordinates(river)
    direction = (xy[-1] - xy[0]) / np.linalg.norm(xy[-1] - xy[0])
    cols, rows = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]))
    along = (cols - shape[1] / 2) * res * direction[0] - (rows - shape[0] / 2) * res * direction[1]
    dem = rng.uniform(1150, 1400) + 0.01 * along + relief  # Pang War valleys lie at 1,200-1,400 m
    return np.clip(dem, 800.0, 2800.0).astype(np.float32)


def solar_position(day_of_year: float, lat_deg: float, solar_hour: float = OVERPASS_SOLAR_HOUR) -> tuple[float, float]:
    """Sun elevation and azimuth (degrees, azimuth clockwise from north) at a local solar time."""
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + day_of_year) / 365.0)
    hour = math.radians(15.0 * (solar_hour - 12.0))
    lat = math.radians(lat_deg)
    elevation = math.asin(math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour))
    azimuth = math.atan2(math.sin(hour), math.cos(hour) * math.sin(lat) - math.tan(decl) * math.cos(lat)) + math.pi
    return math.degrees(elevation), math.degrees(azimuth) % 360.0


def cast_shadow(dem: np.ndarray, res_m: float, elevation_deg: float, azimuth_deg: float,
                horizon_m: float = 1600.0) -> np.ndarray:
    """Pixels whose view of the sun is blocked by higher ground (a ridge between them and the sun)."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    ny, nx = dem.shape
    shadow = np.zeros(dem.shape, dtype=bool)
    for step in range(1, int(horizon_m / res_m)):
        di, dj = round(-math.cos(az) * step), round(math.sin(az) * step)
        if abs(di) >= ny or abs(dj) >= nx:
            break
        target = (slice(max(-di, 0), ny - max(di, 0)), slice(max(-dj, 0), nx - max(dj, 0)))
        toward_sun = (slice(max(di, 0), ny + min(di, 0)), slice(max(dj, 0), nx + min(dj, 0)))
        shadow[target] |= dem[toward_sun] - dem[target] > step * res_m * math.tan(el)
    return shadow


def terrain_illumination(dz_dx: np.ndarray, dz_dy: np.ndarray, dem20: np.ndarray, elevation_deg: float,
                         azimuth_deg: float, diffuse_sky: float = DIFFUSE_SKY) -> np.ndarray:
    """Factor on surface reflectance from the slope's angle to the sun (Lambertian), cast shadows and
    diffuse skylight: 1 on flat ground, below 0.3 on north-west slopes under the low winter sun.

    ``dz_dx``/``dz_dy`` are the 10 m eastward/northward elevation gradients; ``dem20`` the 20 m DEM used
    for cast shadows; ``diffuse_sky`` the share of irradiance that is skylight.
    """
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
    norm = np.sqrt(1.0 + dz_dx ** 2 + dz_dy ** 2)
    cos_incidence = (-dz_dx * sun[0] - dz_dy * sun[1] + sun[2]) / norm
    shaded = cast_shadow(dem20, 2 * RESOLUTION_M, elevation_deg, azimuth_deg).repeat(2, 0).repeat(2, 1)
    direct = np.where(shaded, 0.0, np.maximum(cos_incidence, 0.0) / sun[2])
    sky = (1.0 + 1.0 / norm) / 2.0
    return np.clip((1 - diffuse_sky) * direct + diffuse_sky * sky, 0.0, 2.0).astype(np.float32)


# ---------------------------------------------------------------------------------------- the features

def area_fractions(geoms, grid: GeoBox, supersample: int = 5) -> tuple[np.ndarray, sparse.csr_matrix]:
    """The fraction of each 10 m pixel each polygon covers, by rasterising ``supersample`` x finer.

    Returns the flat indices of the touched pixels and a sparse (pixel, polygon) matrix of fractions.
    Ponds of 8-20 m are partial pixels: their diluted, mixed spectrum is the whole difficulty.
    """
    t, (ny, nx), res = grid.affine, grid.shape.yx, grid.resolution.x
    pix, obj, frac = [], [], []
    for k, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        minx, miny, maxx, maxy = g.bounds
        c0, c1 = max(math.floor((minx - t.c) / res), 0), min(math.ceil((maxx - t.c) / res), nx)
        r0, r1 = max(math.floor((t.f - maxy) / res), 0), min(math.ceil((t.f - miny) / res), ny)
        if c1 <= c0 or r1 <= r0:
            continue
        fine = Affine(res / supersample, 0, t.c + c0 * res, 0, -res / supersample, t.f - r0 * res)
        hit = rasterize([g], out_shape=((r1 - r0) * supersample, (c1 - c0) * supersample), transform=fine,
                        dtype=np.uint8)
        f = hit.reshape(r1 - r0, supersample, c1 - c0, supersample).mean(axis=(1, 3))
        rows, cols = np.nonzero(f)
        pix.append((rows + r0) * nx + cols + c0)
        obj.append(np.full(len(rows), k))
        frac.append(f[rows, cols])
    if not pix:
        return np.zeros(0, dtype=np.int64), sparse.csr_matrix((0, len(geoms)), dtype=np.float32)
    pixels, inverse = np.unique(np.concatenate(pix), return_inverse=True)
    fractions = sparse.csr_matrix((np.concatenate(frac).astype(np.float32), (inverse, np.concatenate(obj))),
                                  shape=(len(pixels), len(geoms)))
    return pixels, fractions


def _blob(rng: np.random.Generator, x: float, y: float, area: float, aspect: float, angle: float) -> shapely.Polygon:
    """An irregular oval of ``area`` m2 centred on (x, y), long axis at ``angle`` (radians from east)."""
    theta = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    u, v = r * np.cos(theta) * math.sqrt(aspect), r * np.sin(theta) / math.sqrt(aspect)
    shape = shapely.Polygon(np.c_[u * math.cos(angle) - v * math.sin(angle), u * math.sin(angle) + v * math.cos(angle)])
    shape = shapely.make_valid(shape)
    scale = math.sqrt(area / shape.area)
    return affinity.translate(affinity.scale(shape, scale, scale, origin=(0, 0)), x, y)


def pond_polygon(x: float, y: float, size: float, shape: str, angle: float) -> shapely.Polygon:
    """A square pond (side ``size``, turned to follow the terrace) or a round one (diameter ``size``)."""
    if shape == "round":
        return shapely.Point(x, y).buffer(size / 2, quad_segs=16)
    square = shapely.box(x - size / 2, y - size / 2, x + size / 2, y + size / 2)
    return affinity.rotate(square, angle, origin=(x, y), use_radians=True)


def clearing_polygon(rng: np.random.Generator, pools_xy: np.ndarray, upslope: np.ndarray) -> shapely.Geometry:
    """The laterite stripped around a pond cluster: in-situ leaching clears the hillside above the ponds,
    where the leachate is injected, so the clearing reaches 30-200 m mostly upslope; 1-15 ha where the
    cluster allows."""
    reach, apron = rng.uniform(30, 200), rng.uniform(30, 50)
    for _ in range(8):
        strips = []
        for x, y in pools_xy:
            turn = rng.normal(0.0, 0.35)  # spurs and gullies: the cut does not run straight up
            d = np.array([upslope[0] * math.cos(turn) - upslope[1] * math.sin(turn),
                          upslope[0] * math.sin(turn) + upslope[1] * math.cos(turn)])
            tip = np.array([x, y]) + d * reach * rng.uniform(0.5, 1.0)
            strips.append(shapely.LineString([(x, y), tuple(tip)]).buffer(apron * rng.uniform(0.7, 1.2), quad_segs=4))
        clearing = shapely.union_all(strips).buffer(25, quad_segs=4).buffer(-25, quad_segs=4)
        ha = clearing.area / 1e4
        if ha < 1.0:
            reach, apron = reach * 1.4, apron * 1.15
        elif ha > 15.0 and reach > 30:
            reach, apron = max(reach * 0.6, 30.0), max(apron * 0.85, 25.0)
        else:
            break
    return clearing


def _upslope(dem_smooth: np.ndarray, grid: GeoBox, x: float, y: float) -> np.ndarray:
    """Unit vector (east, north) pointing uphill at (x, y), from a DEM smoothed to the hillside scale."""
    t, res = grid.affine, grid.resolution.x
    row = int(np.clip((t.f - y) / res, 1, dem_smooth.shape[0] - 2))
    col = int(np.clip((x - t.c) / res, 1, dem_smooth.shape[1] - 2))
    gx = (dem_smooth[row, col + 1] - dem_smooth[row, col - 1]) / (2 * res)
    gy = (dem_smooth[row - 1, col] - dem_smooth[row + 1, col]) / (2 * res)
    g = np.array([gx, gy])
    n = np.linalg.norm(g)
    return g / n if n > 1e-3 else np.array([1.0, 0.0])


def _site_starts(rng: np.random.Generator, n: int, start: float, end: float,
                 pre_period_share: float = PRE_PERIOD_SHARE) -> np.ndarray:
    """Start days: ~15% before the period (up to 3 years), the rest spread over it with the rate of new
    sites tripling after the February 2021 coup."""
    coup = min(max(_day(COUP), start), end)
    before, after = coup - start, (end - coup) * AFTER_COUP_RATE
    u = rng.uniform(0, before + after, n)
    in_period = np.where(u < before, start + u, coup + (u - before) / AFTER_COUP_RATE)
    pre = rng.random(n) < pre_period_share
    return np.where(pre, start - rng.uniform(1, 3 * 365.25, n), in_period)


@dataclass
class Mining:
    ponds: gpd.GeoDataFrame  # every pond of the window, built or not by the end (render attributes in days)
    clearings: gpd.GeoDataFrame  # one per site


def mining_sites(rng: np.random.Generator, pools: gpd.GeoDataFrame, all_pools_xy: np.ndarray, grid: GeoBox,
                 dem_smooth: np.ndarray, image_box: shapely.Polygon, start: float, end: float,
                 scenario: Scenario = Scenario()) -> Mining:
    """One site per pool cluster: a start date, a laterite clearing, ponds built over 0-18 months on the
    real pool points, and for ~15% of sites abandonment after 1-3 years.

    Clusters link the pond polygons (not just their centre points) at the linkage distance, as the
    pipeline and ``evaluate`` link footprints, so the truth's sites are the ones an evaluation derives.
    """
    xy = shapely.get_coordinates(pools.geometry.values)
    # ponds fill the terrace between neighbours, less a 4 m bund (real pools are ~15 m apart)
    nearest = cKDTree(all_pools_xy).query(xy, 2)[0][:, 1] if len(xy) else np.zeros(0)
    size = np.clip(nearest - 4.0, 8.0, 40.0)
    if scenario.pond_max_m is not None:
        size = np.minimum(size, scenario.pond_max_m)
    shape = np.where(pools["type"].to_numpy() == "circular", "round", "square")
    # square ponds are dug along the contour of their terrace
    angle = [math.atan2(*_upslope(dem_smooth, grid, x, y)[::-1]) for x, y in xy]
    outlines = gpd.GeoSeries([pond_polygon(x, y, d, sh, a) for (x, y), d, sh, a in zip(xy, size, shape, angle)],
                             crs=grid.crs)
    site = link_sites(outlines, scenario.site_link_m)
    n_sites = int(site.max()) + 1 if len(site) else 0
    starts = _site_starts(rng, n_sites, start, end, scenario.pre_period_share)
    span = rng.uniform(0, 548, n_sites)
    built = starts[site] + 15 + rng.uniform(0, 1, len(xy)) * span[site]
    last_built = np.array([built[site == s].max() for s in range(n_sites)])
    abandoned = np.where(rng.random(n_sites) < scenario.abandon_share,
                         np.maximum(starts + rng.uniform(365, 3 * 365.25, n_sites), last_built + 60), NEVER)
    heal = rng.uniform(730, 1460, n_sites)
    colour = np.array(POND_COLOURS)[rng.choice(len(POND_COLOURS), len(xy), p=POND_COLOUR_SHARES)]

    upslope = np.zeros((n_sites, 2))
    clearings = []
    # a clearing keeps farther than the linkage distance from other sites' ponds and clearings, so that
    # linking the truth's polygons gives back the same sites
    zones = np.array([shapely.union_all(outlines.values[site == s]).buffer(scenario.site_gap_m, quad_segs=16)
                      for s in range(n_sites)])
    zone_tree = shapely.STRtree(zones)
    keep_out = shapely.Polygon()
    for s in rng.permutation(n_sites):
        own = xy[site == s]
        upslope[s] = _upslope(dem_smooth, grid, *own.mean(axis=0))
        g = clearing_polygon(rng, own, upslope[s])
        near = [k for k in zone_tree.query(g, predicate="intersects") if k != s]
        g = g.difference(shapely.union_all(zones[near])).difference(keep_out).intersection(image_box)
        parts = [p for p in getattr(g, "geoms", [g]) if p.intersects(shapely.multipoints(own))]
        clearings.append((s, shapely.union_all(parts)))
        keep_out = keep_out.union(clearings[-1][1].buffer(scenario.site_gap_m, quad_segs=16))
    clearings.sort(key=lambda c: c[0])

    ponds = gpd.GeoDataFrame({
        "site_id": site, "shape": shape, "size_m": size, "colour": colour, "built_day": built,
        "abandoned_day": abandoned[site], "heal_days": heal[site]}, geometry=outlines.values, crs=grid.crs)
    clearings = gpd.GeoDataFrame({
        "site_id": np.arange(n_sites), "cleared_day": starts, "abandoned_day": abandoned, "heal_days": heal,
        "greyness": rng.uniform(0.0, 0.3, n_sites)},
        geometry=[g for _, g in clearings], crs=grid.crs)
    return Mining(ponds, clearings)


def _place(rng: np.random.Generator, n: int, window: shapely.Polygon, slope_deg: np.ndarray, grid: GeoBox,
           slope_range: tuple[float, float], keep_out: shapely.Geometry, make) -> list[shapely.Polygon]:
    """Rejection-sample ``n`` polygons (``make(x, y)``) on slopes in ``slope_range`` clear of ``keep_out``."""
    left, bottom, right, top = window.bounds
    t, res = grid.affine, grid.resolution.x
    placed = []
    for _ in range(60 * n):
        if len(placed) == n:
            break
        x, y = rng.uniform(left + 100, right - 100), rng.uniform(bottom + 100, top - 100)
        s = slope_deg[int((t.f - y) / res), int((x - t.c) / res)]
        if not slope_range[0] <= s <= slope_range[1]:
            continue
        poly = make(x, y)
        if poly.intersects(keep_out) or not window.contains(poly):
            continue
        placed.append(poly)
        keep_out = keep_out.union(poly.buffer(30, quad_segs=4))
    return placed


def _random_days(rng: np.random.Generator, year: int, first: tuple[int, int], last: tuple[int, int]) -> float:
    a, b = _day(date(year, *first)), _day(date(year, *last))
    return float(rng.uniform(a, b))


def swidden_fields(rng: np.random.Generator, window, slope_deg, grid, upslope_of, keep_out, years,
                   rate: float = 1.0) -> gpd.GeoDataFrame:
    """Shifting cultivation: 0.5-5 ha on 10-35 degree slopes, cut Jan-Mar, burnt Mar-Apr, upland rice
    through the monsoon, then left to regrow. ``rate`` times the usual number of fields a year."""
    rows = []
    area_km2 = window.area / 1e6
    for year in years:
        def make(x, y):
            u = upslope_of(x, y)
            return _blob(rng, x, y, rng.uniform(5e3, 5e4), rng.uniform(1.0, 2.0), math.atan2(u[0], -u[1]))

        for poly in _place(rng, rng.poisson(SWIDDEN_PER_KM2_YEAR * rate * area_km2), window, slope_deg, grid, (10, 35),
                           keep_out, make):
            cut = _random_days(rng, year, (1, 5), (3, 20))
            burn = max(cut + 20, _random_days(rng, year, (3, 1), (4, 25)))
            rows.append({"year": year, "cut_day": cut, "burn_day": burn,
                         "plant_day": _random_days(rng, year, (5, 20), (6, 20)),
                         "harvest_day": _random_days(rng, year, (10, 15), (11, 15)),
                         "regrow_days": rng.uniform(365, 730), "geometry": poly})
            keep_out = keep_out.union(poly.buffer(30, quad_segs=4))
    return gpd.GeoDataFrame(rows, columns=["year", "cut_day", "burn_day", "plant_day", "harvest_day",
                                           "regrow_days", "geometry"], geometry="geometry", crs=grid.crs)


def landslide_scars(rng: np.random.Generator, window, slope_deg, grid, upslope_of, keep_out, years,
                    rate: float = 1.0) -> gpd.GeoDataFrame:
    """Landslides: 0.2-3 ha tongues running downslope from steep ground, mostly in the monsoon, bare
    soil and rock (grey or red) that revegetates over 2-4 years. ``rate`` times the usual number a year."""
    rows = []
    area_km2 = window.area / 1e6
    for year in years:
        def make(x, y):
            u = upslope_of(x, y)
            area, aspect = rng.uniform(2e3, 3e4), rng.uniform(2.0, 5.0)
            length = math.sqrt(area * aspect * 4 / math.pi)
            # the scar hangs from its head scarp at (x, y) down the slope
            return _blob(rng, x - u[0] * length / 2, y - u[1] * length / 2, area, aspect, math.atan2(u[1], u[0]))

        for poly in _place(rng, rng.poisson(LANDSLIDES_PER_KM2_YEAR * rate * area_km2), window, slope_deg, grid,
                           (25, 90), keep_out, make):
            day = (_random_days(rng, year, (6, 1), (9, 30)) if rng.random() < 0.85
                   else _random_days(rng, year, (1, 1), (12, 31)))
            rows.append({"year": year, "slide_day": day, "heal_days": rng.uniform(730, 1460),
                         "redness": rng.uniform(0.0, 0.6), "geometry": poly})
            keep_out = keep_out.union(poly.buffer(30, quad_segs=4))
    return gpd.GeoDataFrame(rows, columns=["year", "slide_day", "heal_days", "redness", "geometry"],
                            geometry="geometry", crs=grid.crs)


def villages_beside_mines(rng: np.random.Generator, clearings: gpd.GeoDataFrame, share: float, window: shapely.Polygon,
                          avoid: shapely.Geometry, end: float) -> gpd.GeoDataFrame:
    """Villages (packed-earth yards, tin roofs, gardens; 0.3-1.5 ha) and the dirt road to the mine, built
    beside ``share`` of the sites 2-24 months after they start: bare and permanent like a leaching
    clearing, 60-160 m from it, on whatever slope is there. The worker camps and access roads that grow
    up beside real mines; the pipeline must not count them as mining or merge them into its footprint."""
    rows = []
    for geom, start in zip(clearings.geometry.values, clearings["cleared_day"].to_numpy()):
        if geom.is_empty or rng.random() >= share:
            continue
        area, built = rng.uniform(3e3, 1.5e4), start + rng.uniform(60, 730)
        bare, roof = rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.2)
        c, radius = geom.centroid, math.sqrt(geom.area / math.pi)
        for _ in range(20):
            a, d = rng.uniform(0, 2 * math.pi), radius + rng.uniform(60, 160) + math.sqrt(area / math.pi)
            village = _blob(rng, c.x + d * math.cos(a), c.y + d * math.sin(a), area, rng.uniform(1.0, 2.0),
                            rng.uniform(0, math.pi))
            if window.contains(village) and village.distance(avoid) >= 40:
                break
        else:
            continue
        road = shapely.shortest_line(village, geom).buffer(3.0, cap_style="flat")
        road = road.difference(village).difference(geom)
        rows.append({"kind": "village", "built_day": built, "bare": bare, "roof": roof, "geometry": village})
        if not road.is_empty:
            rows.append({"kind": "road", "built_day": built, "bare": 1.0, "roof": 0.0, "geometry": road})
        avoid = avoid.union(village.buffer(30))
    out = gpd.GeoDataFrame(rows, columns=["kind", "built_day", "bare", "roof", "geometry"], geometry="geometry",
                           crs=clearings.crs)
    return out[out["built_day"] <= end].reset_index(drop=True)


def paddy_fields(rng: np.random.Generator, floor: shapely.Geometry, keep_out, crs) -> gpd.GeoDataFrame:
    """Wet-rice fields of ~0.6 ha on the flat valley floor, three quarters of it farmed."""
    floor = floor.difference(keep_out)
    if floor.is_empty:
        return gpd.GeoDataFrame({"phase_days": []}, geometry=[], crs=crs)
    left, bottom, right, top = floor.bounds
    n = max(int(floor.area / 6000), 1)
    seeds = shapely.points(np.c_[rng.uniform(left, right, 4 * n), rng.uniform(bottom, top, 4 * n)])
    seeds = seeds[shapely.contains(floor, seeds)][:n]
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=floor.envelope))
    fields = shapely.get_parts(shapely.intersection(cells, floor))
    fields = fields[(shapely.get_type_id(fields) == 3) & (shapely.area(fields) > 1000)]
    fields = fields[rng.random(len(fields)) < 0.75]
    return gpd.GeoDataFrame({"phase_days": rng.normal(0, 8, len(fields))}, geometry=fields, crs=crs)


# ------------------------------------------------------------------------------------------ timelines
# Each returns, for one day, the weights of every object over COVERS (rows sum to 1 where the object
# shows, 0 where the land underneath shows through).

def paddy_cover(day: float, day_of_year: float, phase_days: np.ndarray) -> np.ndarray:
    doy = (day_of_year - phase_days) % 365.0
    w = np.zeros((len(phase_days), len(COVERS)), dtype=np.float32)
    for col, cover in enumerate(("stubble", "flooded_paddy", "rice"), start=1):
        w[:, COVER[cover]] = np.interp(doy, PADDY_CALENDAR[:, 0], PADDY_CALENDAR[:, col])
    return w


def swidden_cover(day: float, day_of_year: float, cut_day, burn_day, plant_day, harvest_day, regrow_days) -> np.ndarray:
    w = np.zeros((len(cut_day), len(COVERS)), dtype=np.float32)
    felled = (day >= cut_day) & (day < burn_day)
    w[felled, COVER["shrub"]], w[felled, COVER["stubble"]] = 0.5, 0.5  # slash drying on the slope
    burnt = (day >= burn_day) & (day < plant_day)
    k = _ramp(day, burn_day, plant_day)[burnt]  # rain and hoeing mix the ash into the soil
    w[burnt, COVER["ash"]], w[burnt, COVER["grey_soil"]] = 1 - 0.6 * k, 0.6 * k
    crop = (day >= plant_day) & (day < harvest_day)
    k = _ramp(day, plant_day, plant_day + 80)[crop]
    w[crop, COVER["rice"]], w[crop, COVER["grey_soil"]] = 0.2 + 0.7 * k, 0.8 - 0.7 * k
    fallow = (day >= harvest_day) & (day < harvest_day + 2 * regrow_days)
    k = _ramp(day, harvest_day, harvest_day + regrow_days)[fallow]  # shrub-like NDVI within 1-2 years
    k2 = _ramp(day, harvest_day + regrow_days, harvest_day + 2 * regrow_days)[fallow]
    w[fallow, COVER["stubble"]], w[fallow, COVER["shrub"]], w[fallow, COVER["forest"]] = 1 - k, k * (1 - k2), k2
    return w


def landslide_cover(day: float, day_of_year: float, slide_day, heal_days, redness) -> np.ndarray:
    w = np.zeros((len(slide_day), len(COVERS)), dtype=np.float32)
    k = _ramp(day, slide_day, slide_day + heal_days)
    k2 = _ramp(day, slide_day + heal_days, slide_day + heal_days + 365)
    shown = (day >= slide_day) & (k2 < 1)
    bare = (1 - k) * shown
    w[:, COVER["grey_soil"]], w[:, COVER["laterite"]] = bare * (1 - redness), bare * redness
    w[:, COVER["shrub"]], w[:, COVER["forest"]] = k * (1 - k2) * shown, k2 * shown
    return w


def clearing_cover(day: float, day_of_year: float, cleared_day, abandoned_day, heal_days, greyness) -> np.ndarray:
    """Laterite that stays bare while the site works (leaching keeps the hillside stripped), then
    slowly greens once the site is abandoned and its ponds have dried."""
    w = np.zeros((len(cleared_day), len(COVERS)), dtype=np.float32)
    shown = day >= cleared_day
    k0 = _ramp(day, cleared_day, cleared_day + 30)  # felling and bulldozing take weeks
    k = _ramp(day, abandoned_day + 90, abandoned_day + 90 + heal_days)
    bare = k0 * (1 - k) * shown
    w[:, COVER["forest"]] = (1 - k0) * shown
    w[:, COVER["laterite"]], w[:, COVER["grey_soil"]] = bare * (1 - greyness), bare * greyness
    w[:, COVER["shrub"]] = k * shown
    return w


def pond_cover(day: float, day_of_year: float, built_day, abandoned_day, heal_days, cover_index) -> np.ndarray:
    """Open (or plastic-covered) water from the day it is built; after abandonment it dries to mud within
    a season, then weeds take it over."""
    n = len(built_day)
    w = np.zeros((n, len(COVERS)), dtype=np.float32)
    shown = day >= built_day
    k1 = _ramp(day, abandoned_day, abandoned_day + 90)
    k2 = _ramp(day, abandoned_day + 90, abandoned_day + 90 + heal_days)
    w[np.arange(n), cover_index.astype(int)] = (1 - k1) * shown
    w[:, COVER["mud"]] = k1 * (1 - k2) * shown
    w[:, COVER["shrub"]] = k2 * shown
    return w


def village_cover(day: float, day_of_year: float, built_day, bare, roof) -> np.ndarray:
    """Yards and roads of laterite, tin roofs, gardens green in the monsoon, from the day they are built."""
    w = np.zeros((len(built_day), len(COVERS)), dtype=np.float32)
    shown = (day >= built_day).astype(np.float32)
    wet = _ramp(day_of_year, 160, 200) * (1 - _ramp(day_of_year, 290, 330))
    garden = (1 - bare - roof) * shown
    w[:, COVER["laterite"]], w[:, COVER["plastic_white"]] = bare * shown, roof * shown
    w[:, COVER["shrub"]], w[:, COVER["stubble"]] = garden * (0.4 + 0.6 * wet), garden * 0.6 * (1 - wet)
    return w


def river_cover(day: float, day_of_year: float, n: int = 1) -> np.ndarray:
    """A bit turbid all year, muddier with the monsoon floods."""
    silt = 0.1 + 0.3 * _ramp(day_of_year, 150, 190) * (1 - _ramp(day_of_year, 260, 300))
    w = np.zeros((n, len(COVERS)), dtype=np.float32)
    w[:, COVER["river_water"]], w[:, COVER["milky_water"]] = 1 - silt, silt
    return w


@dataclass(frozen=True)
class CoverLayer:
    """Objects of one kind laid over the landscape: where they are (sub-pixel fractions) and what covers
    them on a given day. Layers are painted in order, so ponds lie on clearings which lie on forest."""
    name: str
    pixels: np.ndarray
    fractions: sparse.csr_matrix  # (pixel, object) area fractions
    cover: Callable[[float, float], np.ndarray]  # (day, day_of_year) -> (object, cover) weights

    def paint(self, refl: np.ndarray, day: float, day_of_year: float) -> None:
        """Mix the layer into ``refl`` (bands, pixels) in place, linearly by area."""
        if not len(self.pixels):
            return
        w = self.cover(day, day_of_year)
        shown = w.sum(axis=1)
        if not shown.any():
            return
        covered = self.fractions @ shown
        mixed = self.fractions @ (w @ ENDMEMBERS)
        crowded = covered > 1.0  # neighbouring ponds sharing a pixel cannot cover more than all of it
        mixed[crowded] /= covered[crowded, None]
        covered = np.minimum(covered, 1.0)
        refl[:, self.pixels] = refl[:, self.pixels] * (1.0 - covered) + mixed.T


def cover_layer(name: str, gdf: gpd.GeoDataFrame, grid: GeoBox, timeline, **columns) -> CoverLayer:
    pixels, fractions = area_fractions(gdf.geometry.values, grid)
    params = {k: np.asarray(gdf[c] if isinstance(c, str) else c, dtype=np.float64) for k, c in columns.items()}
    return CoverLayer(name, pixels, fractions, partial(timeline, **params))


# ---------------------------------------------------------------------------------------- landscape

@dataclass
class Landscape:
    """Everything that does not change from scene to scene, precomputed once."""
    grid: GeoBox  # 10 m image grid
    grid20: GeoBox
    lat: float
    background: np.ndarray  # (bands, y, x) forest reflectance with its gaps and crowns
    layers: list[CoverLayer]
    dz_dx: np.ndarray
    dz_dy: np.ndarray
    dem20: np.ndarray
    _illumination: dict = field(default_factory=dict)
    scenario: Scenario = Scenario()

    def illumination(self, day_of_year: float, solar_hour: float = OVERPASS_SOLAR_HOUR) -> np.ndarray:
        """Terrain illumination at the overpass, cached per 8-day step of the sun's yearly course (and
        per overpass time: each orbit sees the AOI at its own)."""
        step = int(round(day_of_year / 8.0)) % 46
        if (step, solar_hour) not in self._illumination:
            el, az = solar_position(step * 8.0, self.lat, solar_hour)
            self._illumination[step, solar_hour] = terrain_illumination(self.dz_dx, self.dz_dy, self.dem20, el, az,
                                                                        self.scenario.diffuse_sky)
        return self._illumination[step, solar_hour]


def forest_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Evergreen forest with canopy gaps and older regrowth (a shrub share up to ~35%) and crown texture."""
    gaps = np.clip(0.12 + 0.1 * smooth_field(rng, shape, RESOLUTION_M, 400, beta=2.5), 0.0, 0.35)
    crowns = 1.0 + 0.04 * smooth_field(rng, shape, RESOLUTION_M, 60, beta=1.5)
    forest, shrub = ENDMEMBERS[COVER["forest"]], ENDMEMBERS[COVER["shrub"]]
    refl = forest[:, None, None] * (1 - gaps) + shrub[:, None, None] * gaps
    return (refl * crowns).astype(np.float32)


@dataclass
class Truth:
    ponds: gpd.GeoDataFrame
    clearings: gpd.GeoDataFrame
    sites: gpd.GeoDataFrame
    confounders: gpd.GeoDataFrame


def build_landscape(seed: int, window: tuple[float, float, float, float], crs: CRS, start: date, end: date,
                    pools: gpd.GeoDataFrame, scenario: Scenario = Scenario()) -> tuple[Landscape, Truth, np.ndarray, GeoBox]:
    """The DEM, land cover and mining of the simulated AOI, and its truth.

    Returns the landscape, the truth, and the DEM on a 10 m UTM grid padded beyond the image (so that its
    lon/lat reprojection covers the image footprint) with that grid.
    """
    left, bottom, right, top = window
    image = (left - IMAGE_MARGIN_M, bottom - IMAGE_MARGIN_M, right + IMAGE_MARGIN_M, top + IMAGE_MARGIN_M)
    grid, grid20 = snapped_grid(image, crs, RESOLUTION_M), snapped_grid(image, crs, 2 * RESOLUTION_M)
    pad = 10
    dem_grid = snapped_grid((image[0] - pad * RESOLUTION_M, image[1] - pad * RESOLUTION_M,
                             image[2] + pad * RESOLUTION_M, image[3] + pad * RESOLUTION_M), crs, RESOLUTION_M)
    window_box, image_box = shapely.box(*window), shapely.box(*grid.boundingbox)
    xy = shapely.get_coordinates(pools.geometry.values)
    inside = pools[(xy[:, 0] >= left) & (xy[:, 0] < right) & (xy[:, 1] >= bottom) & (xy[:, 1] < top)]
    inside = inside.reset_index(drop=True)
    inside_xy = shapely.get_coordinates(inside.geometry.values)

    rng = _rng(seed, "river")
    floor_m = rng.uniform(100, 220)
    centreline = river_course(rng, image, inside_xy, floor_m + 50)
    channel = river_channel(rng, centreline)
    dem_padded = valley_terrain(_rng(seed, "terrain"), dem_grid, centreline, floor_m, scenario.hillside_slope_deg)
    dem = dem_padded[pad:-pad, pad:-pad]
    dz_dy, dz_dx = np.gradient(dem.astype(np.float64), RESOLUTION_M)
    dz_dy = -dz_dy  # rows run south
    dem_smooth = ndimage.gaussian_filter(dem, 8)
    slope_deg = np.degrees(np.arctan(np.hypot(*np.gradient(ndimage.gaussian_filter(dem, 2), RESOLUTION_M))))
    dem20 = dem.reshape(dem.shape[0] // 2, 2, dem.shape[1] // 2, 2).mean(axis=(1, 3))

    t0, t1 = _day(start), _day(end)
    mining = mining_sites(_rng(seed, "sites"), inside, shapely.get_coordinates(pools.geometry.values), grid,
                          dem_smooth, image_box, t0, t1, scenario)
    mining_zone = shapely.union(shapely.union_all(mining.clearings.geometry.values),
                                shapely.multipoints(inside_xy)).buffer(120, quad_segs=4)
    floor = centreline.buffer(floor_m).intersection(image_box)
    keep_out = shapely.union_all([mining_zone, floor.buffer(50)])
    upslope_of = partial(_upslope, dem_smooth, grid)
    years = range(start.year - 2, end.year + 1)  # earlier clearings are still regrowing at the start
    swiddens = swidden_fields(_rng(seed, "swidden"), window_box, slope_deg, grid, upslope_of, keep_out, years,
                              scenario.swidden_rate)
    keep_out = keep_out.union(shapely.union_all(swiddens.geometry.values).buffer(30))
    landslides = landslide_scars(_rng(seed, "landslide"), window_box, slope_deg, grid, upslope_of, keep_out, years,
                                 scenario.landslide_rate)
    paddies = paddy_fields(_rng(seed, "paddy"), floor.difference(channel.buffer(5)),
                           mining_zone.buffer(-60), crs)
    river = gpd.GeoDataFrame(geometry=[channel.intersection(image_box)], crs=crs)
    villages = None
    if scenario.village_share > 0:
        avoid = shapely.union_all([*mining.clearings.geometry.values, *mining.ponds.geometry.values, channel])
        villages = villages_beside_mines(_rng(seed, "village"), mining.clearings, scenario.village_share,
                                         window_box, avoid, t1)

    ponds = mining.ponds
    layers = [
        cover_layer("paddy", paddies, grid, paddy_cover, phase_days="phase_days"),
        cover_layer("swidden", swiddens, grid, swidden_cover, cut_day="cut_day", burn_day="burn_day",
                    plant_day="plant_day", harvest_day="harvest_day", regrow_days="regrow_days"),
        cover_layer("landslide", landslides, grid, landslide_cover, slide_day="slide_day", heal_days="heal_days",
                    redness="redness"),
        *([cover_layer("village", villages, grid, village_cover, built_day="built_day", bare="bare", roof="roof")]
          if villages is not None and len(villages) else []),
        cover_layer("clearing", mining.clearings, grid, clearing_cover, cleared_day="cleared_day",
                    abandoned_day="abandoned_day", heal_days="heal_days", greyness="greyness"),
        cover_layer("river", river, grid, river_cover),
        cover_layer("pond", ponds, grid, pond_cover, built_day="built_day", abandoned_day="abandoned_day",
                    heal_days="heal_days", cover_index=ponds["colour"].map(POND_COVER).to_numpy()),
    ]
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
    landscape = Landscape(grid, grid20, lat, forest_background(_rng(seed, "background"), grid.shape.yx), layers,
                          dz_dx.astype(np.float32), dz_dy.astype(np.float32), dem20, scenario=scenario)
    truth = ground_truth(mining, swiddens, landslides, paddies, river, window_box, start, end, villages)
    return landscape, truth, dem_padded, dem_grid


def ground_truth(mining: Mining, swiddens, landslides, paddies, river, window_box, start: date, end: date,
                 villages: gpd.GeoDataFrame | None = None) -> Truth:
    """Contract 5 layers: what exists by the end of the period, clipped to the AOI window; first_year is
    never before start_year (mining older than the period counts in its first year)."""
    t1, y0 = _day(end), start.year

    def iso(days):
        return [_date(d).isoformat() if d <= t1 else "" for d in days]

    def first_year(days):
        return np.maximum([_date(d).year for d in days], y0).astype(int)

    p = mining.ponds[mining.ponds["built_day"] <= t1].reset_index(drop=True)
    area = area_m2(p.geometry).to_numpy()
    covered = p["colour"].str.startswith("plastic").to_numpy()
    ponds = gpd.GeoDataFrame({
        "pond_id": np.arange(len(p)), "site_id": p["site_id"].to_numpy(), "first_year": first_year(p["built_day"]),
        "built": iso(p["built_day"]), "abandoned": iso(p["abandoned_day"]), "shape": p["shape"].to_numpy(),
        "colour": p["colour"].to_numpy(), "covered": covered, "detectable": ~covered & (area >= DETECTABLE_AREA_M2),
        "area_m2": area}, geometry=p.geometry.values, crs=p.crs)

    c = mining.clearings
    geoms = shapely.intersection(c.geometry.values, window_box)
    keep = ~shapely.is_empty(geoms)
    c, geoms = c[keep].reset_index(drop=True), geoms[keep]
    clearings = gpd.GeoDataFrame({
        "clearing_id": np.arange(len(c)), "site_id": c["site_id"].to_numpy(),
        "first_year": first_year(c["cleared_day"]), "cleared": iso(c["cleared_day"]),
        "abandoned": iso(c["abandoned_day"]), "area_m2": shapely.area(geoms)}, geometry=geoms, crs=c.crs)

    site_ids = np.arange(len(mining.clearings))
    hulls = [shapely.convex_hull(shapely.union_all([*clearings.geometry[clearings["site_id"] == s],
                                                    *ponds.geometry[ponds["site_id"] == s]])) for s in site_ids]
    sites = gpd.GeoDataFrame({
        "site_id": site_ids, "first_year": first_year(mining.clearings["cleared_day"]),
        "n_ponds": np.bincount(ponds["site_id"], minlength=len(site_ids))}, geometry=hulls, crs=c.crs)
    sites = sites[~sites.geometry.is_empty].reset_index(drop=True)

    kinds = [("swidden", swiddens, swiddens["year"].to_numpy()), ("landslide", landslides, landslides["year"].to_numpy()),
             ("paddy", paddies, np.full(len(paddies), y0)), ("river", river, np.full(len(river), y0))]
    if villages is not None:
        for k in ("village", "road"):
            part = villages[villages["kind"] == k]
            kinds.append((k, part, first_year(part["built_day"]) if len(part) else np.zeros(0, int)))
    geoms = np.concatenate([shapely.intersection(g.geometry.values, window_box) for _, g, _ in kinds])
    confounders = gpd.GeoDataFrame({
        "kind": np.concatenate([[k] * len(g) for k, g, _ in kinds]),
        "year": np.concatenate([y for _, _, y in kinds]).astype(int), "area_m2": shapely.area(geoms)},
        geometry=geoms, crs=c.crs)
    confounders = confounders[~confounders.geometry.is_empty].reset_index(drop=True)
    return Truth(ponds, clearings, sites, confounders)


# --------------------------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class Scene:
    index: int  # within its orbit's schedule
    date: date
    platform: str
    orbit: int = RELATIVE_ORBIT

    @property
    def id(self) -> str:
        return f"S2{self.platform[-1].upper()}_{MGRS_TILE}_{self.date:%Y%m%d}_0_L2A"

    @property
    def datetime(self) -> datetime:
        hms = OVERPASS_UTC if self.orbit == RELATIVE_ORBIT else SECOND_ORBIT_UTC
        return datetime(self.date.year, self.date.month, self.date.day, *hms, tzinfo=timezone.utc)

    @property
    def solar_hour(self) -> float:
        """Local solar time of the overpass at the AOI."""
        return OVERPASS_SOLAR_HOUR if self.orbit == RELATIVE_ORBIT else SECOND_ORBIT_SOLAR_HOUR

    @property
    def baseline(self) -> str:
        return processing_baseline(self.date)

    @property
    def offset(self) -> float:
        """BOA_ADD_OFFSET: baseline 04.00 stores reflectance + 0.1, so that dark pixels keep their noise."""
        return -0.1 if self.baseline >= "04.00" else 0.0


def processing_baseline(day: date) -> str:
    if day >= date(2022, 1, 25):
        return "04.00"
    if day >= date(2021, 1, 26):
        return "03.01"
    return "02.14"


def scene_schedule(start: date, end: date, revisit_days: int, second_orbit: bool = False) -> list[Scene]:
    """A scene every ``revisit_days`` from R104; with ``second_orbit``, also one from R004 3 days after
    each (the same satellite, 43 orbits on), unless a R104 scene falls on that day."""
    n = (end - start).days // revisit_days + 1
    scenes = [Scene(k, start + timedelta(days=k * revisit_days), ("sentinel-2b", "sentinel-2a")[k % 2])
              for k in range(n)]
    if second_orbit:
        taken = {s.date for s in scenes}
        later = [Scene(s.index, s.date + timedelta(days=SECOND_ORBIT_DAYS), s.platform, SECOND_ORBIT) for s in scenes]
        scenes = sorted(scenes + [s for s in later if s.date <= end and s.date not in taken], key=lambda s: s.date)
    return scenes


def second_orbit_edge(shape: tuple[int, int], res_m: float) -> dict:
    """R004's eastern swath edge across the image (a ``swath_edge`` cut): the ground track repeats to
    within a few hundred metres, so it crosses every R004 scene in the same place."""
    share, heading = SECOND_ORBIT_EDGE
    return {"side": 1, "angle": math.radians(heading), "offset": share * shape[1] * res_m}


def second_orbit_footprint(grid: GeoBox) -> shapely.Polygon:
    """The part of the image that R004's swath covers, in the grid's CRS."""
    cut = second_orbit_edge(grid.shape.yx, grid.resolution.x)
    left, bottom, _, top = grid.boundingbox
    height = top - bottom
    # swath_edge's line, x = offset + y tan(angle) in metres from the top-left corner (y down)
    x_top, x_bottom = cut["offset"], cut["offset"] + height * math.tan(cut["angle"])
    return shapely.Polygon([(left, top), (left, bottom), (left + x_bottom, bottom), (left + x_top, top)])


def cloud_field(rng: np.random.Generator, shape: tuple[int, int], cover: float) -> np.ndarray:
    """Cloud opacity 0-1 covering about ``cover`` of the scene with opacity > 0.5: thick cores and a
    semi-transparent fringe (opacity 0.1-0.5) that the SCL does not flag."""
    f = smooth_field(rng, shape, RESOLUTION_M, rng.uniform(1500, 4000), beta=3.6)
    threshold = np.quantile(f[::4, ::4], 1.0 - cover)
    fringe = rng.uniform(0.3, 0.8)  # in standard deviations of the field: wider means more haze-like edges
    return np.clip(0.5 + (f - threshold) / fringe, 0.0, 1.0)


def cloud_shadow(cloud: np.ndarray, elevation_deg: float, azimuth_deg: float, height_m: float) -> np.ndarray:
    """The clouds' shadow on the ground: displaced away from the sun by height x tan(zenith)."""
    reach = height_m / math.tan(math.radians(elevation_deg)) / RESOLUTION_M
    az = math.radians(azimuth_deg)
    # the field is periodic, so rolling it keeps clouds just outside the image casting their shadows in
    return np.roll(cloud, (round(reach * math.cos(az)), round(-reach * math.sin(az))), axis=(0, 1))


def sky_conditions(rng: np.random.Generator, month: int, scenario: Scenario = Scenario()) -> dict:
    """Per scene: cloud cover aimed at, haze from burning, cirrus."""
    cover = rng.uniform(0.0, 0.03)  # even a clear day has a few puffs of cumulus
    if rng.random() < CLOUDY_CHANCE[month] + scenario.wetter:
        if month in MONSOON:
            cover = rng.uniform(0.7, 1.0) if rng.random() < 0.85 else rng.uniform(0.3, 0.7)
        else:
            cover = min(rng.beta(1.2, 3.5) + scenario.wetter, 0.9)  # a wet year's dry season is cloudier too
    haze = rng.uniform(0.4, 1.0) if month in (3, 4) else rng.uniform(0.0, 0.3) if month in (2, 5) else 0.0
    cirrus = rng.uniform(0.04, 0.15) if rng.random() < 0.12 else 0.0
    return {"cover": cover, "haze": haze + scenario.haze, "cirrus": cirrus, "cloud_height_m": rng.uniform(800, 3000),
            "cloud_brightness": rng.uniform(0.45, 0.8)}


def swath_edge(shape: tuple[int, int], res_m: float, cut: dict) -> np.ndarray:
    """Nodata beyond the swath edge, a line running about north-south a little east of north."""
    ny, nx = shape
    y, x = (np.arange(ny)[:, None] + 0.5) * res_m, (np.arange(nx)[None, :] + 0.5) * res_m
    return cut["side"] * (x - y * math.tan(cut["angle"]) - cut["offset"]) > 0


def scl_from_scene(refl20: dict, cloud20, cirrus20, shadow20, shadow_seen20, illum20, nodata20) -> np.ndarray:
    """Scene classification as Sen2Cor would make it, with its blind spots: thin cloud fringes (opacity
    < 0.5) pass as land, some shadows are missed, bright plastic is taken for cloud."""
    blue, green, red, nir = refl20["blue"], refl20["green"], refl20["red"], refl20["nir"]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    scl = np.full(blue.shape, 5, dtype=np.uint8)
    scl[ndvi > 0.35] = 4
    scl[(ndwi > 0.1) & (nir < 0.1)] = 6
    scl[illum20 < 0.3] = 2
    scl[(blue > 0.25) & (cloud20 <= 0.5)] = 8
    scl[(shadow20 > 0.5) & shadow_seen20] = 3
    scl[cirrus20 > 0.06] = 10
    scl[cloud20 > 0.5] = 8
    scl[cloud20 > 0.75] = 9
    if nodata20 is not None:
        scl[nodata20] = 0
    return scl


def _coarsen(a: np.ndarray) -> np.ndarray:
    """What a 20 m pixel sees: the mean of its four 10 m pixels."""
    return a.reshape(*a.shape[:-2], a.shape[-2] // 2, 2, a.shape[-1] // 2, 2).mean(axis=(-3, -1))


def to_dn(refl: np.ndarray, offset: float, nodata: np.ndarray | None) -> np.ndarray:
    dn = np.rint((refl - offset) / DN_SCALE)
    np.clip(dn, 1, 65535, out=dn)
    dn = dn.astype(np.uint16)
    if nodata is not None:
        dn[nodata] = 0
    return dn


@dataclass
class RenderedScene:
    scene: Scene
    dn: dict  # asset key -> uint16 array
    scl: np.ndarray
    cloud_cover: float
    sun: tuple[float, float]


def render_scene(land: Landscape, scene: Scene, seed: int, noise: np.ndarray) -> RenderedScene:
    """One acquisition: the landscape on that day, lit by that day's sun, under that day's sky."""
    second = scene.orbit != RELATIVE_ORBIT
    rng = _rng(seed, "orbit2" if second else "scene", scene.index)
    shape = land.grid.shape.yx
    day, doy = _day(scene.date), float(scene.date.timetuple().tm_yday)
    refl = land.background.copy()
    flat = refl.reshape(len(BANDS), -1)
    for layer in land.layers:
        layer.paint(flat, day, doy)

    sun = solar_position(doy, land.lat, scene.solar_hour)
    sky = sky_conditions(rng, scene.date.month, land.scenario)
    illum = land.illumination(doy, scene.solar_hour)
    cloud = cloud_field(rng, shape, sky["cover"]) if sky["cover"] > 0 else np.zeros(shape, np.float32)
    shadow = cloud_shadow(cloud, *sun, sky["cloud_height_m"])
    gain = rng.normal(1.0, 0.02) * rng.normal(1.0, 0.005, len(BANDS)).astype(np.float32)
    if second:
        gain = gain * SECOND_ORBIT_VIEW_GAIN
    # skylight still reaches the ground under a cloud's shadow: darker, not black
    refl *= (illum * (1.0 - 0.7 * shadow))[None] * gain[:, None, None]
    if sky["haze"] > 0:
        haze = sky["haze"] * (0.7 + 0.15 * smooth_field(rng, shape, RESOLUTION_M, 3000, beta=3.5))
        refl += haze[None] * HAZE_SHAPE[:, None, None]
    cirrus = np.zeros(shape, np.float32)
    if sky["cirrus"] > 0:
        cirrus = sky["cirrus"] * np.clip(1.0 + 0.5 * smooth_field(rng, shape, RESOLUTION_M, 5000, beta=3.5), 0, 2)
        refl += cirrus[None] * CIRRUS_SHAPE[:, None, None]
    if sky["cover"] > 0:
        tops = sky["cloud_brightness"] * CLOUD_SHAPE[:, None, None] * (0.85 + 0.15 * cloud[None])
        refl += cloud[None] * (tops - refl)

    nodata10 = nodata20 = None
    if second:
        cut = second_orbit_edge(shape, RESOLUTION_M)
        nodata10 = swath_edge(shape, RESOLUTION_M, cut)
        nodata20 = swath_edge(land.grid20.shape.yx, 2 * RESOLUTION_M, cut)
    elif rng.random() < 0.05:
        cut = {"side": rng.choice([-1, 1]), "angle": math.radians(rng.uniform(8, 16)),
               "offset": rng.uniform(0.2, 0.8) * shape[1] * RESOLUTION_M}
        nodata10 = swath_edge(shape, RESOLUTION_M, cut)
        nodata20 = swath_edge(land.grid20.shape.yx, 2 * RESOLUTION_M, cut)

    refl20 = {BANDS[i].key: _coarsen(refl[i]) for i in (BLUE, GREEN, RED, NIR, *BANDS_20M)}
    # Sen2Cor finds most cloud shadow, not all: about a fifth of it, in patches, stays unflagged
    shadow_seen = smooth_field(rng, land.grid20.shape.yx, 2 * RESOLUTION_M, 2000, beta=3.0) > -0.85
    scl = scl_from_scene(refl20, _coarsen(cloud), _coarsen(cirrus), _coarsen(shadow), shadow_seen,
                         _coarsen(illum), nodata20)
    dn = {}
    for i, band in enumerate(BANDS):
        a = refl[i] if band.gsd == 10 else refl20[band.key]
        a = a + noise_slice(rng, noise, a.shape)
        dn[band.key] = to_dn(a, scene.offset, nodata10 if band.gsd == 10 else nodata20)
    valid = scl != 0
    cloud_cover = 100.0 * float(np.isin(scl[valid], (8, 9, 10)).mean()) if valid.any() else 100.0
    return RenderedScene(scene, dn, scl, round(cloud_cover, 2), sun)


def noise_slice(rng: np.random.Generator, noise: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sensor noise from a precomputed bank, at a random offset: drawing 4 M normals per scene would cost
    more than the rest of the scene, and offsets keep scenes' noise independent."""
    n = shape[0] * shape[1]
    start = int(rng.integers(0, len(noise) - n))
    return noise[start:start + n].reshape(shape)


# --------------------------------------------------------------------------------------------- writing

def write_cog(path: Path, data: np.ndarray, grid: GeoBox) -> None:
    with rasterio.open(path, "w", driver="COG", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=grid.crs.to_wkt(), transform=grid.affine, nodata=0,
                       compress="DEFLATE") as dst:
        dst.write(data, 1)


def write_scene_files(folder: Path, rendered: RenderedScene, grid: GeoBox, grid20: GeoBox) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for band in BANDS:
        write_cog(folder / f"{band.file}.tif", rendered.dn[band.key], grid if band.gsd == 10 else grid20)
    write_cog(folder / "SCL.tif", rendered.scl, grid20)


def _footprint(bounds, crs: CRS) -> shapely.Polygon:
    """``bounds`` (a box, or a polygon) in lon/lat."""
    ring = shapely.segmentize(bounds if isinstance(bounds, shapely.Geometry) else shapely.box(*bounds), 500)
    to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
    return shapely.transform(ring, lambda xy: np.c_[to_wgs84.transform(xy[:, 0], xy[:, 1])])


def scene_item(rendered: RenderedScene, grid: GeoBox, grid20: GeoBox, footprint: shapely.Polygon) -> pystac.Item:
    """An Earth Search v1 ``sentinel-2-l2a`` item with relative asset hrefs."""
    s = rendered.scene
    epsg = grid.crs.epsg
    item = pystac.Item(
        id=s.id, geometry=shapely.geometry.mapping(footprint), bbox=list(footprint.bounds), datetime=s.datetime,
        properties={
            "platform": s.platform, "constellation": "sentinel-2", "instruments": ["msi"],
            "eo:cloud_cover": rendered.cloud_cover, "proj:epsg": epsg, "proj:code": f"EPSG:{epsg}",
            "mgrs:utm_zone": int(MGRS_TILE[:2]), "mgrs:latitude_band": MGRS_TILE[2], "mgrs:grid_square": MGRS_TILE[3:],
            "s2:mgrs_tile": MGRS_TILE, "s2:processing_baseline": s.baseline, "s2:product_type": "S2MSI2A",
            "sat:relative_orbit": s.orbit, "sat:orbit_state": "descending",
            "view:sun_elevation": round(rendered.sun[0], 3), "view:sun_azimuth": round(rendered.sun[1], 3),
            "simulated": True},
        stac_extensions=STAC_EXTENSIONS, collection=S2_COLLECTION)
    for band in (*BANDS, None):
        g = grid if band is not None and band.gsd == 10 else grid20
        common = {"gsd": g.resolution.x, "proj:shape": list(g.shape.yx), "proj:transform": list(g.affine)[:6]}
        if band is None:
            item.add_asset("scl", pystac.Asset(
                "./SCL.tif", title="Scene classification map (SCL)", media_type=COG, roles=["data"],
                extra_fields={**common, "raster:bands": [{"nodata": 0, "data_type": "uint8",
                                                          "spatial_resolution": 20}]}))
            continue
        item.add_asset(band.key, pystac.Asset(
            f"./{band.file}.tif", title=f"{band.title} - {band.gsd}m", media_type=COG, roles=["data", "reflectance"],
            extra_fields={**common,
                          "eo:bands": [{"name": band.key, "description": band.title,
                                        "common_name": "rededge" if band.key.startswith("rededge") else band.key,
                                        "center_wavelength": band.centre_um, "full_width_half_max": band.fwhm_um}],
                          "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                                            "spatial_resolution": band.gsd, "scale": DN_SCALE, "offset": s.offset}]}))
    return item


def dem_item(folder: Path, dem: np.ndarray, dem_grid: GeoBox, footprint: shapely.Polygon) -> pystac.Item:
    """The DEM as Copernicus GLO-30 is delivered: float32 metres on a 1 arc-second lon/lat grid."""
    arcsec = 1.0 / 3600.0
    west, south, east, north = footprint.bounds
    west, south = math.floor(west / arcsec) * arcsec, math.floor(south / arcsec) * arcsec
    width, height = math.ceil((east - west) / arcsec), math.ceil((north - south) / arcsec)
    transform = Affine(arcsec, 0, west, 0, -arcsec, south + height * arcsec)
    out = np.zeros((height, width), dtype=np.float32)
    reproject(dem, out, src_transform=dem_grid.affine, src_crs=dem_grid.crs.to_wkt(), dst_transform=transform,
              dst_crs="EPSG:4326", resampling=Resampling.bilinear)
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(folder / "DEM.tif", "w", driver="COG", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:4326", transform=transform, compress="DEFLATE", predictor=3) as dst:
        dst.write(out, 1)
    bounds = (west, south, west + width * arcsec, south + height * arcsec)
    item = pystac.Item(
        id="Copernicus_DSM_COG_10_N25_00_E098_00_DEM", geometry=shapely.geometry.mapping(shapely.box(*bounds)),
        bbox=list(bounds), datetime=datetime(2021, 4, 22, tzinfo=timezone.utc),
        properties={"platform": "tandem-x", "gsd": 30, "proj:epsg": 4326, "proj:code": "EPSG:4326", "simulated": True},
        stac_extensions=STAC_EXTENSIONS[1:3], collection=DEM_COLLECTION)
    item.add_asset("data", pystac.Asset(
        "./DEM.tif", title="Simulated Copernicus DEM GLO-30", media_type=COG, roles=["data"],
        extra_fields={"proj:shape": [height, width], "proj:transform": list(transform)[:6],
                      "raster:bands": [{"data_type": "float32", "spatial_resolution": 30, "unit": "metre"}]}))
    return item


def build_catalog(name: str, params: dict, items: list[pystac.Item], dem: pystac.Item, start: date, end: date,
                  footprint: shapely.Polygon) -> pystac.Catalog:
    catalog = pystac.Catalog(id=name, description=f"SIMULATED Sentinel-2 L2A scenes and DEM ({name}), "
                             "laid out like Earth Search v1; ground truth in truth.gpkg",
                             extra_fields={"simulation": json.dumps(params, sort_keys=True)})
    s2 = pystac.Collection(S2_COLLECTION, "Simulated Sentinel-2 L2A", pystac.Extent(
        pystac.SpatialExtent([list(footprint.bounds)]),
        pystac.TemporalExtent([[datetime(start.year, 1, 1, tzinfo=timezone.utc),
                                datetime(end.year, 12, 31, 23, 59, 59, tzinfo=timezone.utc)]])), license="proprietary")
    cop = pystac.Collection(DEM_COLLECTION, "Simulated Copernicus DEM GLO-30", pystac.Extent(
        pystac.SpatialExtent([dem.bbox]), pystac.TemporalExtent([[dem.datetime, dem.datetime]])), license="proprietary")
    s2.add_items(items)
    cop.add_item(dem)
    catalog.add_children([s2, cop])
    return catalog


def write_truth(path: Path, truth: Truth) -> None:
    for layer in ("ponds", "clearings", "sites", "confounders"):
        getattr(truth, layer).to_file(path, layer=layer, driver="GPKG")


def _previous_parameters(out: Path) -> dict | None:
    """The parameters of the simulated AOI already in ``out``, or None if there is none."""
    try:
        return json.loads(json.loads((out / "catalog.json").read_text())["simulation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_out(out: Path, params: dict) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file: pass a directory for the simulated AOI")
    if not out.is_dir() or not any(out.iterdir()):
        return
    previous = _previous_parameters(out)
    # an interrupted simulation leaves only its partial folder behind
    if previous is None and not all(p.name.startswith(".partial-") for p in out.iterdir()):
        raise OutputError(f"{out} is not empty and is not a simulated AOI: pass a new or empty directory")
    if previous is not None and previous != params:
        log.warning("replacing the simulated AOI in %s (made with other parameters)", out)


def _move_into_place(partial_dir: Path, out: Path) -> None:
    """Replace the output's parts, catalog.json last: a directory without it is not a finished simulation."""
    (out / "catalog.json").unlink(missing_ok=True)
    for name in (S2_COLLECTION, DEM_COLLECTION, "truth.gpkg", "aoi.geojson"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(partial_dir / name, target)
    os.replace(partial_dir / "catalog.json", out / "catalog.json")
    partial_dir.rmdir()
    for stale in out.glob(".partial-*"):  # left by interrupted runs
        shutil.rmtree(stale, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- API

def simulate(out: str | Path, seed: int = 0, *, size_km: float = 6.0, start_year: int = 2020, end_year: int = 2024,
             revisit_days: int = 10, progress: Callable[[int, int], None] | None = None,
             reuse: bool = False, scenario: Scenario | str = "standard") -> SimulatedAOI:
    """Write a simulated AOI into ``out``: ``catalog.json`` (local STAC, contract 3), ``truth.gpkg``
    (contract 5) and ``aoi.geojson``. Deterministic for a given seed and parameters; with ``reuse``,
    a complete simulation already in ``out`` with the same parameters and simulator version is kept.

    Seed 0 is the demo: the densest 6 km of the Pang War pond field, 643 real pools. ``scenario`` (a
    :class:`Scenario` or a name in ``SCENARIOS``) makes it harder; "standard" is the landscape as it always was.
    """
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise ConfigError(f"unknown scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    size_m = round(size_km * 1000.0 / SNAP_M) * SNAP_M
    if size_m < 500:
        raise ConfigError(f"size_km={size_km} is too small: simulate at least 0.5 km")
    if end_year < start_year:
        raise ConfigError(f"end_year {end_year} is before start_year {start_year}")
    if revisit_days < 1:
        raise ConfigError(f"revisit_days={revisit_days}: must be at least 1")
    started = time.perf_counter()
    out = Path(out)
    start, end = date(start_year, 1, 1), date(end_year, 12, 31)
    pools = load_pools()
    window = choose_window(pools, seed, size_m)
    crs = utm_crs(*Transformer.from_crs(pools.crs, 4326, always_xy=True).transform(
        (window[0] + window[2]) / 2, (window[1] + window[3]) / 2))
    params = {"seed": seed, "size_km": size_m / 1000.0, "start_year": start_year, "end_year": end_year,
              "revisit_days": revisit_days, "window": list(window), "crs": f"EPSG:{crs.to_epsg()}",
              "version": SIMULATOR_VERSION, **({"scenario": scenario.changed()} if scenario.changed() else {})}
    _check_out(out, params)
    if reuse and _previous_parameters(out) == params and (out / "truth.gpkg").is_file():
        log.info("reusing the simulated AOI in %s (same parameters)", out)
        return SimulatedAOI(out / "catalog.json", out / "truth.gpkg", out / "aoi.geojson", start, end)
    name = f"simulated-seed{seed}" + ("-" + "-".join(sorted(scenario.changed())) if scenario.changed() else "")
    land, truth, dem_padded, dem_grid = build_landscape(seed, window, crs, start, end, pools.to_crs(crs), scenario)
    log.info("landscape of %s ready in %.1f s: %d ponds, %d sites", name, time.perf_counter() - started,
             len(truth.ponds), len(truth.sites))

    out.mkdir(parents=True, exist_ok=True)
    partial_dir = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        scenes = scene_schedule(start, end, revisit_days, scenario.second_orbit)
        footprint = _footprint(land.grid.boundingbox, crs)
        footprints = {RELATIVE_ORBIT: footprint, SECOND_ORBIT: _footprint(second_orbit_footprint(land.grid), crs)}
        noise = (_rng(seed, "noise").standard_normal(1 << 22, dtype=np.float32) * PIXEL_NOISE)
        items = []
        with ThreadPoolExecutor(max_workers=2) as writers:  # GDAL compresses outside the GIL
            pending = deque()
            for scene in scenes:
                rendered = render_scene(land, scene, seed, noise)
                folder = partial_dir / S2_COLLECTION / scene.id
                pending.append(writers.submit(write_scene_files, folder, rendered, land.grid, land.grid20))
                items.append(scene_item(rendered, land.grid, land.grid20, footprints[scene.orbit]))
                while len(pending) > 3 or (pending and scene is scenes[-1]):
                    pending.popleft().result()
                    if progress is not None:
                        progress(len(items) - len(pending), len(scenes))
        dem = dem_item(partial_dir / DEM_COLLECTION / "Copernicus_DSM_COG_10_N25_00_E098_00_DEM", dem_padded,
                       dem_grid, footprint)
        write_truth(partial_dir / "truth.gpkg", truth)
        window_wgs84 = _footprint(window, crs)
        write_aoi(partial_dir / "aoi.geojson", window_wgs84, name=name, simulated=True, seed=seed)
        catalog = build_catalog(name, params, items, dem, start, end, footprint)
        catalog.normalize_hrefs(str(partial_dir))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        _move_into_place(partial_dir, out)
    except BaseException as e:
        from pipeline.export import disk_full

        full = isinstance(e, Exception) and disk_full(e, partial_dir)  # GDAL says only "seek error"
        shutil.rmtree(partial_dir, ignore_errors=True)
        if full:
            raise OutputError(f"disk full writing the simulated AOI to {out}: free disk space (or simulate onto a "
                              "larger disk) and run again; nothing was left half-written") from None
        raise
    log.info("simulated %s: %d scenes in %.1f s -> %s", name, len(scenes), time.perf_counter() - started, out)
    return SimulatedAOI(out / "catalog.json", out / "truth.gpkg", out / "aoi.geojson", start, end)
