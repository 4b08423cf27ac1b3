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

The "valley" scenario adds what else a Kachin valley holds, each drawn anew per seed: a river 5-60 m
wide, meandering or braided, turbid or clear, swelling over its sand and gravel bars in the monsoon (its
mixed edge pixels break into chains of pond-sized blobs); streams off the hillsides, some dry in the dry
season; fish ponds; alluvial gold workings with sluice ponds; new roads cut across the slopes;
plantations; villages away from the mines; and scenes that land a few metres off the grid from date to
date (misregistration, less after the 2021 GRI refinement).

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
    "forest": (0.025, 0.045, 0.025, 0.070, 0.200, 0.260, 0.290, 0.300, 0.140, 0.060),
    "shrub": (0.035, 0.065, 0.045, 0.100, 0.220, 0.270, 0.300, 0.310, 0.200, 0.100),
    "rice": (0.035, 0.070, 0.040, 0.100, 0.250, 0.320, 0.360, 0.370, 0.200, 0.090),
    "stubble": (0.070, 0.090, 0.110, 0.130, 0.160, 0.180, 0.200, 0.210, 0.270, 0.200),
    "laterite": (0.060, 0.100, 0.180, 0.220, 0.250, 0.270, 0.280, 0.290, 0.360, 0.270),
    "grey_soil": (0.100, 0.130, 0.150, 0.170, 0.190, 0.200, 0.210, 0.220, 0.280, 0.220),
    "ash": (0.030, 0.035, 0.040, 0.045, 0.050, 0.055, 0.060, 0.065, 0.080, 0.070),
    "river_water": (0.060, 0.080, 0.070, 0.060, 0.035, 0.030, 0.025, 0.020, 0.010, 0.008),
    "flooded_paddy": (0.060, 0.075, 0.065, 0.065, 0.055, 0.050, 0.045, 0.042, 0.025, 0.018),
    "milky_water": (0.140, 0.180, 0.170, 0.130, 0.080, 0.060, 0.050, 0.040, 0.015, 0.010),
    "blue_liner": (0.160, 0.120, 0.070, 0.050, 0.030, 0.025, 0.020, 0.020, 0.010, 0.008),
    "plastic_white": (0.550, 0.570, 0.580, 0.580, 0.580, 0.580, 0.580, 0.570, 0.450, 0.380),
    "plastic_black": (0.040, 0.040, 0.040, 0.040, 0.040, 0.045, 0.045, 0.045, 0.050, 0.045),
    "mud": (0.080, 0.100, 0.120, 0.130, 0.140, 0.150, 0.160, 0.160, 0.180, 0.140),
    # the valley scenario's covers (appended, so the standard covers keep their rows): clear mountain water,
    # dark beyond the green; fish-pond water green with algae, a small red-edge bump and dark SWIR; river
    # gravel and sand, grey-beige with the high SWIR of dry mineral ground but no iron-oxide red rise
    "clear_water": (0.040, 0.045, 0.030, 0.022, 0.012, 0.010, 0.008, 0.007, 0.004, 0.003),
    "algal_water": (0.040, 0.075, 0.045, 0.050, 0.048, 0.042, 0.038, 0.032, 0.012, 0.009),
    "gravel": (0.110, 0.135, 0.155, 0.175, 0.190, 0.200, 0.210, 0.215, 0.270, 0.220),
    "sand": (0.140, 0.180, 0.215, 0.240, 0.260, 0.270, 0.280, 0.290, 0.340, 0.280),
}
COVERS = list(SPECTRA)
ENDMEMBERS = np.array([SPECTRA[c] for c in COVERS], dtype=np.float32)  # (n_covers, n_bands)
COVER = {name: i for i, name in enumerate(COVERS)}  # cover name -> row of ENDMEMBERS
POND_COLOURS = ("milky", "blue", "plastic_white", "plastic_black")
POND_COLOUR_SHARES = (0.60, 0.25, 0.075, 0.075)
POND_COVER = {
    "milky": COVER["milky_water"],
    "blue": COVER["blue_liner"],
    "plastic_white": COVER["plastic_white"],
    "plastic_black": COVER["plastic_black"],
}
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
CLOUDY_CHANCE = {1: 0.25, 2: 0.25, 3: 0.3, 4: 0.4, 5: 0.7, 6: 0.95, 7: 1.0, 8: 1.0, 9: 0.95, 10: 0.6, 11: 0.3, 12: 0.25}
MONSOON = (6, 7, 8, 9)

# day of year -> weights of (stubble, flooded_paddy, rice): flooded and transplanted in June,
# green July-October, harvested October-November, stubble through the dry season
PADDY_CALENDAR = np.array(
    [
        (0, 1.0, 0.0, 0.0),
        (135, 1.0, 0.0, 0.0),
        (160, 0.1, 0.9, 0.0),
        (190, 0.0, 0.7, 0.3),
        (230, 0.0, 0.2, 0.8),
        (275, 0.0, 0.0, 1.0),
        (300, 0.4, 0.0, 0.6),
        (320, 1.0, 0.0, 0.0),
        (366, 1.0, 0.0, 0.0),
    ]
)

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
    # what else the valley holds that reads like mining: a river of drawn width and form (meandering or
    # braided, turbid or clear, swelling in the monsoon over sand and gravel bars), streams off the
    # hillsides, fish ponds, alluvial gold workings, new roads cut across slopes, plantations, villages
    valley_confounders: bool = False
    # sd (m) of each scene's shift off the grid before 2021 (less after: GRI_REFINED_SHARE); 0: on the grid
    misregistration_m: float = 0.0

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
    "valley": Scenario(valley_confounders=True, misregistration_m=6.0),
    "misregistered": Scenario(misregistration_m=6.0),
}
# two_orbits adds data rather than difficulty (and doubles the scenes), flat makes it easier: both stay out
SCENARIOS["all"] = Scenario(
    pond_max_m=10.0,
    wetter=0.35,
    haze=0.6,
    village_share=0.5,
    abandon_share=0.6,
    pre_period_share=0.6,
    site_link_m=120.0,
    site_gap_m=150.0,
    swidden_rate=4.0,
    landslide_rate=4.0,
    hillside_slope_deg=30.0,
    diffuse_sky=0.08,
    valley_confounders=True,
    misregistration_m=6.0,
)

# separate random streams, so that e.g. more landslides do not move the clouds
STREAM = {
    name: i
    for i, name in enumerate(
        [
            "window",
            "river",
            "terrain",
            "background",
            "sites",
            "swidden",
            "landslide",
            "paddy",
            "noise",
            "scene",
            "village",
            "orbit2",
            "valley_river",
            "stream",
            "fish_pond",
            "gold",
            "road_cut",
            "plantation",
            "valley_village",
            "misregistration",
        ]
    )
}


@dataclass(frozen=True)
class SimulatedAOI:
    catalog: Path  # out/catalog.json
    truth: Path  # out/truth.gpkg
    aoi: Path  # out/aoi.geojson
    start: date  # Jan 1 of start_year
    end: date  # Dec 31 of end_year

    def run_settings(self, out: Path, composite_dir: Path | None = None) -> dict:
        """The settings (``load_config`` overrides) of a run over this AOI's catalog and whole period."""
        settings = {
            "aoi": self.aoi,
            "source.kind": "local",
            "source.catalog": self.catalog,
            "period.start": self.start.isoformat(),
            "period.end": self.end.isoformat(),
            "out": out,
        }
        return settings if composite_dir is None else {**settings, "compute.composite_dir": composite_dir}


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
    log.warning(
        "no %.1f km window with %d pools found for seed %d; using one with %d", size_m / 1000, need, seed, best_n
    )
    return best


# ----------------------------------------------------------------------------------------- the terrain


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], res_m: float, scale_m: float, beta: float = 3.0
) -> np.ndarray:
    """A periodic Gaussian random field (mean 0, std 1) with a power-law spectrum (power ~ k^-beta),
    flattened at wavelengths longer than ``scale_m``: fractal terrain, cloud decks, textures."""
    ky = np.fft.fftfreq(shape[0], res_m)[:, None]
    kx = np.fft.rfftfreq(shape[1], res_m)[None, :]
    amp = (kx**2 + ky**2 + scale_m**-2) ** (-beta / 4.0)
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


def valley_terrain(
    rng: np.random.Generator, grid: GeoBox, river: shapely.LineString, floor_m: float, slope_deg: float = 20.0
) -> np.ndarray:
    """Elevation (m): ridged mountains rising several hundred metres from a flat valley floor ``floor_m``
    either side of the river, scaled so that the median hillside slope is ``slope_deg`` (20: hillside
    slopes are mostly 10-35 degrees)."""
    shape, res = grid.shape.yx, grid.resolution.x
    on_river = rasterize([river], out_shape=shape, transform=grid.affine, all_touched=True).astype(bool)
    distance = ndimage.distance_transform_edt(~on_river) * res
    rise = 1.0 - np.exp(-np.maximum(distance - floor_m, 0) / 2000.0)
    foot = _ramp(distance, floor_m, floor_m + 300)  # the floor stays flat: paddies need it
    # ridged multifractal: octaves of (1 - |noise|)^2 give sharp crests and spurs ~1-3 km apart
    ridges = sum(
        weight * (1.0 - np.abs(smooth_field(rng, shape, res, scale, beta=5.0) / 2.0)) ** 2
        for scale, weight in ((3000, 1.0), (1500, 0.5), (750, 0.25))
    )
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


def cast_shadow(
    dem: np.ndarray, res_m: float, elevation_deg: float, azimuth_deg: float, horizon_m: float = 1600.0
) -> np.ndarray:
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


def terrain_illumination(
    dz_dx: np.ndarray,
    dz_dy: np.ndarray,
    dem20: np.ndarray,
    elevation_deg: float,
    azimuth_deg: float,
    diffuse_sky: float = DIFFUSE_SKY,
) -> np.ndarray:
    """Factor on surface reflectance from the slope's angle to the sun (Lambertian), cast shadows and
    diffuse skylight: 1 on flat ground, below 0.3 on north-west slopes under the low winter sun.

    ``dz_dx``/``dz_dy`` are the 10 m eastward/northward elevation gradients; ``dem20`` the 20 m DEM used
    for cast shadows; ``diffuse_sky`` the share of irradiance that is skylight.
    """
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
    norm = np.sqrt(1.0 + dz_dx**2 + dz_dy**2)
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
        hit = rasterize(
            [g], out_shape=((r1 - r0) * supersample, (c1 - c0) * supersample), transform=fine, dtype=np.uint8
        )
        f = hit.reshape(r1 - r0, supersample, c1 - c0, supersample).mean(axis=(1, 3))
        rows, cols = np.nonzero(f)
        pix.append((rows + r0) * nx + cols + c0)
        obj.append(np.full(len(rows), k))
        frac.append(f[rows, cols])
    if not pix:
        return np.zeros(0, dtype=np.int64), sparse.csr_matrix((0, len(geoms)), dtype=np.float32)
    pixels, inverse = np.unique(np.concatenate(pix), return_inverse=True)
    fractions = sparse.csr_matrix(
        (np.concatenate(frac).astype(np.float32), (inverse, np.concatenate(obj))), shape=(len(pixels), len(geoms))
    )
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
            d = np.array(
                [
                    upslope[0] * math.cos(turn) - upslope[1] * math.sin(turn),
                    upslope[0] * math.sin(turn) + upslope[1] * math.cos(turn),
                ]
            )
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


def _site_starts(
    rng: np.random.Generator, n: int, start: float, end: float, pre_period_share: float = PRE_PERIOD_SHARE
) -> np.ndarray:
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


def mining_sites(
    rng: np.random.Generator,
    pools: gpd.GeoDataFrame,
    all_pools_xy: np.ndarray,
    grid: GeoBox,
    dem_smooth: np.ndarray,
    image_box: shapely.Polygon,
    start: float,
    end: float,
    scenario: Scenario = Scenario(),
) -> Mining:
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
    outlines = gpd.GeoSeries(
        [pond_polygon(x, y, d, sh, a) for (x, y), d, sh, a in zip(xy, size, shape, angle)], crs=grid.crs
    )
    site = link_sites(outlines, scenario.site_link_m)
    n_sites = int(site.max()) + 1 if len(site) else 0
    starts = _site_starts(rng, n_sites, start, end, scenario.pre_period_share)
    span = rng.uniform(0, 548, n_sites)
    built = starts[site] + 15 + rng.uniform(0, 1, len(xy)) * span[site]
    last_built = np.array([built[site == s].max() for s in range(n_sites)])
    abandoned = np.where(
        rng.random(n_sites) < scenario.abandon_share,
        np.maximum(starts + rng.uniform(365, 3 * 365.25, n_sites), last_built + 60),
        NEVER,
    )
    heal = rng.uniform(730, 1460, n_sites)
    colour = np.array(POND_COLOURS)[rng.choice(len(POND_COLOURS), len(xy), p=POND_COLOUR_SHARES)]

    upslope = np.zeros((n_sites, 2))
    clearings = []
    # a clearing keeps farther than the linkage distance from other sites' ponds and clearings, so that
    # linking the truth's polygons gives back the same sites
    zones = np.array(
        [
            shapely.union_all(outlines.values[site == s]).buffer(scenario.site_gap_m, quad_segs=16)
            for s in range(n_sites)
        ]
    )
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

    ponds = gpd.GeoDataFrame(
        {
            "site_id": site,
            "shape": shape,
            "size_m": size,
            "colour": colour,
            "built_day": built,
            "abandoned_day": abandoned[site],
            "heal_days": heal[site],
        },
        geometry=outlines.values,
        crs=grid.crs,
    )
    clearings = gpd.GeoDataFrame(
        {
            "site_id": np.arange(n_sites),
            "cleared_day": starts,
            "abandoned_day": abandoned,
            "heal_days": heal,
            "greyness": rng.uniform(0.0, 0.3, n_sites),
        },
        geometry=[g for _, g in clearings],
        crs=grid.crs,
    )
    return Mining(ponds, clearings)


def _place(
    rng: np.random.Generator,
    n: int,
    window: shapely.Polygon,
    slope_deg: np.ndarray,
    grid: GeoBox,
    slope_range: tuple[float, float],
    keep_out: shapely.Geometry,
    make,
) -> list[shapely.Polygon]:
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


def swidden_fields(
    rng: np.random.Generator, window, slope_deg, grid, upslope_of, keep_out, years, rate: float = 1.0
) -> gpd.GeoDataFrame:
    """Shifting cultivation: 0.5-5 ha on 10-35 degree slopes, cut Jan-Mar, burnt Mar-Apr, upland rice
    through the monsoon, then left to regrow. ``rate`` times the usual number of fields a year."""
    rows = []
    area_km2 = window.area / 1e6
    for year in years:

        def make(x, y):
            u = upslope_of(x, y)
            return _blob(rng, x, y, rng.uniform(5e3, 5e4), rng.uniform(1.0, 2.0), math.atan2(u[0], -u[1]))

        for poly in _place(
            rng, rng.poisson(SWIDDEN_PER_KM2_YEAR * rate * area_km2), window, slope_deg, grid, (10, 35), keep_out, make
        ):
            cut = _random_days(rng, year, (1, 5), (3, 20))
            burn = max(cut + 20, _random_days(rng, year, (3, 1), (4, 25)))
            rows.append(
                {
                    "year": year,
                    "cut_day": cut,
                    "burn_day": burn,
                    "plant_day": _random_days(rng, year, (5, 20), (6, 20)),
                    "harvest_day": _random_days(rng, year, (10, 15), (11, 15)),
                    "regrow_days": rng.uniform(365, 730),
                    "geometry": poly,
                }
            )
            keep_out = keep_out.union(poly.buffer(30, quad_segs=4))
    return gpd.GeoDataFrame(
        rows,
        columns=["year", "cut_day", "burn_day", "plant_day", "harvest_day", "regrow_days", "geometry"],
        geometry="geometry",
        crs=grid.crs,
    )


def landslide_scars(
    rng: np.random.Generator, window, slope_deg, grid, upslope_of, keep_out, years, rate: float = 1.0
) -> gpd.GeoDataFrame:
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

        for poly in _place(
            rng,
            rng.poisson(LANDSLIDES_PER_KM2_YEAR * rate * area_km2),
            window,
            slope_deg,
            grid,
            (25, 90),
            keep_out,
            make,
        ):
            day = (
                _random_days(rng, year, (6, 1), (9, 30))
                if rng.random() < 0.85
                else _random_days(rng, year, (1, 1), (12, 31))
            )
            rows.append(
                {
                    "year": year,
                    "slide_day": day,
                    "heal_days": rng.uniform(730, 1460),
                    "redness": rng.uniform(0.0, 0.6),
                    "geometry": poly,
                }
            )
            keep_out = keep_out.union(poly.buffer(30, quad_segs=4))
    return gpd.GeoDataFrame(
        rows, columns=["year", "slide_day", "heal_days", "redness", "geometry"], geometry="geometry", crs=grid.crs
    )


def villages_beside_mines(
    rng: np.random.Generator,
    clearings: gpd.GeoDataFrame,
    share: float,
    window: shapely.Polygon,
    avoid: shapely.Geometry,
    end: float,
) -> gpd.GeoDataFrame:
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
            village = _blob(
                rng, c.x + d * math.cos(a), c.y + d * math.sin(a), area, rng.uniform(1.0, 2.0), rng.uniform(0, math.pi)
            )
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
    out = gpd.GeoDataFrame(
        rows, columns=["kind", "built_day", "bare", "roof", "geometry"], geometry="geometry", crs=clearings.crs
    )
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


# ---------------------------------------------------------------------------------- the valley (scenario)
# What else a Kachin valley holds that a detector of leaching ponds and cleared slopes can take for
# mining, drawn only with ``Scenario.valley_confounders`` and each from a random stream of its own.

# River stage through the year (0: lowest water, 1: a normal monsoon's bankfull): low January-April,
# rising with the first rains in May-June, high July-September, falling through November.
RIVER_STAGE = np.array(
    [
        (0, 0.08),
        (45, 0.02),
        (105, 0.0),
        (135, 0.1),
        (160, 0.4),
        (185, 0.75),
        (215, 1.0),
        (255, 1.0),
        (280, 0.8),
        (305, 0.45),
        (335, 0.2),
        (366, 0.08),
    ]
)
# A river bed's zones from the middle out: (name, stage above which it is under water, damp mud and grass
# shares while it is dry). The low-water channel never dries; bars stand above all but the biggest floods.
RIVER_ZONES = (
    ("low_water", -1.0, 0.0, 0.0),
    ("low_bank", 0.3, 0.3, 0.0),
    ("high_bank", 0.7, 0.1, 0.1),
    ("bar", 0.95, 0.05, 0.3),
)
# seasonal streams stop flowing in the dry season: the share of their bed under water by day of year
STREAM_FLOW = np.array([(0, 1.0), (20, 1.0), (50, 0.0), (120, 0.0), (145, 1.0), (366, 1.0)])
FLAT_FLOOR_DEG = 5.0  # fish ponds need flat ground: a pond on a slope needs a dam, not a bund
# Sentinel-2's multi-temporal co-registration was refined on the Global Reference Image from 2021: a
# scene's shift off the grid fell from ~6 m to ~2.5 m (sd)
GRI_FROM = date(2021, 1, 1)
GRI_REFINED_SHARE = 2.5 / 6.0


def _resample(line: shapely.LineString, step_m: float) -> np.ndarray:
    """Points every ``step_m`` along ``line`` (its end included)."""
    d = np.minimum(np.arange(0.0, line.length + step_m, step_m), line.length)
    return shapely.get_coordinates(shapely.line_interpolate_point(line, d))


def _along(xy: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(np.hypot(*np.diff(xy, axis=0).T))]


def _normals(xy: np.ndarray) -> np.ndarray:
    """Unit vectors to the left of a polyline, at each vertex."""
    t = np.gradient(xy, axis=0)
    n = np.c_[-t[:, 1], t[:, 0]]
    return n / np.maximum(np.hypot(*n.T), 1e-9)[:, None]


def _wander(rng: np.random.Generator, n: int, step_m: float, scale_m: float) -> np.ndarray:
    """A smooth 1-D random profile (mean 0, sd 1) varying over ``scale_m``: widths and swings along a course."""
    f = ndimage.gaussian_filter1d(rng.standard_normal(n + 1), max(scale_m / step_m, 1.0))[:n]
    return (f - f.mean()) / max(f.std(), 1e-9)


def ribbon(xy: np.ndarray, width: np.ndarray) -> shapely.Geometry:
    """A band ``width`` wide (per vertex) along the polyline ``xy``. Bends tighter than the half-width
    fold the sides over; ``make_valid`` keeps both lobes."""
    side = _normals(xy) * (np.asarray(width)[:, None] / 2.0)
    ring = np.r_[xy + side, (xy - side)[::-1]]
    return shapely.make_valid(shapely.Polygon(ring), method="structure", keep_collapsed=False)


@dataclass
class RiverForm:
    form: str  # meandering | braided
    mean_width_m: float  # wet width at the river's mean stage, summed over threads
    centreline: shapely.LineString  # where the bed runs (the valley axis swings about under it)
    zones: list  # one geometry per RIVER_ZONES, disjoint
    belt: shapely.Geometry  # the bankfull bed and its bars: the river as an analyst would draw it


def valley_river(
    rng: np.random.Generator, axis: shapely.LineString, floor_m: float, image_box: shapely.Polygon
) -> RiverForm:
    """The river of this valley: 5-60 m wide at mean stage (log-uniform, so streams-as-rivers of 5-15 m
    are common), meandering with a sinuosity of its own or, if 15 m or wider, sometimes braided into 2-4
    threads that part around gravel bars and join again; wider and narrower along its course; under
    water out to its low-water, mean or bankfull edges by season (RIVER_ZONES). It stays on the valley
    floor, so as far from the pools as ``river_course`` put the axis."""
    width = math.exp(rng.uniform(math.log(5.0), math.log(60.0)))
    braided = width >= 15.0 and rng.random() < 0.4
    low, high = rng.uniform(0.45, 0.75), rng.uniform(1.3, 1.8)  # low-water and bankfull width, share of mean
    # meander wavelength scales with channel width (~10x); bends no tighter than the bankfull width
    wavelength = width * high * rng.uniform(8.0, 14.0)
    step = float(np.clip(wavelength / 16.0, 2.0, 10.0))
    xy = _resample(axis, step)
    s, n = _along(xy), len(xy)
    normal = _normals(xy)
    n_threads = int(rng.integers(2, 5)) if braided else 1
    thread_w = np.maximum(width * rng.dirichlet(np.full(n_threads, 3.0)), 3.0)
    along = np.clip(1.0 + rng.uniform(0.1, 0.35) * _wander(rng, n, step, rng.uniform(150, 600)), 0.4, 1.5)

    sinuous = rng.uniform(0.02, 0.35) * wavelength  # bend amplitude: from nearly straight to tortuous
    amp = min(sinuous, wavelength**2 / (4 * math.pi**2 * width * high)) * (0.3 if braided else 1.0)
    lateral = amp * np.sin(2 * math.pi * s / wavelength + rng.uniform(0, 2 * math.pi))
    lateral += (
        amp
        * rng.uniform(0.0, 0.5)
        * np.sin(2 * math.pi * s / (wavelength * rng.uniform(1.6, 2.4)) + rng.uniform(0, 2 * math.pi))
    )
    room = floor_m - 20.0
    lateral += rng.uniform(0.1, 0.5) * room * _wander(rng, n, step, rng.uniform(500, 1500))  # across the floor

    offsets = np.zeros((n_threads, n))
    if braided:
        # the threads part between nodes 250-900 m apart and join at them (sin^2 envelope), in an order
        # kept within each reach so that they do not cross
        gaps = rng.uniform(250, 900, int((s[-1] + 900) / 250) + 2)
        nodes = np.cumsum(gaps) - rng.uniform(0, 900) - gaps[0]
        reach = np.searchsorted(nodes, s, side="right")
        phase = (s - nodes[reach - 1]) / (nodes[reach] - nodes[reach - 1])
        spread = rng.uniform(0.5, 1.5) * width * high
        order = np.sort(rng.uniform(-1.0, 1.0, (len(nodes) + 1, n_threads)), axis=1)
        offsets = spread * (np.sin(np.pi * phase) ** 2)[None, :] * order[reach].T
    half = float(thread_w.max() * high * along.max() / 2.0)
    reach_m = np.abs(lateral[None, :] + offsets).max()
    if reach_m > 0:
        fit = min(1.0, max(room - half, 0.0) / reach_m)
        lateral, offsets = lateral * fit, offsets * fit
    threads = [xy + normal * (lateral + o)[:, None] for o in offsets]

    edges = [shapely.union_all([ribbon(t, w * along * f) for t, w in zip(threads, thread_w)]) for f in (low, 1.0, high)]
    zones = [edges[0], edges[1].difference(edges[0]), edges[2].difference(edges[1])]
    if braided:
        hw = (thread_w[:, None] * along[None, :] * high) / 2.0
        left = (lateral + (offsets + hw).max(axis=0))[:, None]
        right = (lateral + (offsets - hw).min(axis=0))[:, None]
        between = shapely.make_valid(
            shapely.Polygon(np.r_[xy + normal * left, (xy + normal * right)[::-1]]),
            method="structure",
            keep_collapsed=False,
        )
        zones.append(between.difference(edges[2]))
    else:
        zones.append(shapely.Polygon())
    zones = [shapely.intersection(z, image_box) for z in zones]
    return RiverForm(
        "braided" if braided else "meandering",
        width,
        shapely.LineString(xy + normal * lateral[:, None]),
        zones,
        shapely.union_all(zones),
    )


def _bilinear(a: np.ndarray, r: float, c: float) -> float:
    r0, c0 = min(int(r), a.shape[0] - 2), min(int(c), a.shape[1] - 2)
    fr, fc = r - r0, c - c0
    return float(
        a[r0, c0] * (1 - fr) * (1 - fc)
        + a[r0 + 1, c0] * fr * (1 - fc)
        + a[r0, c0 + 1] * (1 - fr) * fc
        + a[r0 + 1, c0 + 1] * fr * fc
    )


def steepest_descent(
    dem: np.ndarray,
    to_river: np.ndarray,
    row: float,
    col: float,
    stop_at: float,
    step_px: float = 1.0,
    max_steps: int = 3000,
) -> np.ndarray:
    """The path (rows, cols) water takes from (row, col) straight down ``dem`` until ``to_river`` (the
    distance to the river, m) falls below ``stop_at`` or it leaves the grid. Where the smoothed DEM
    holds a pit, the water spills toward the river until it is lower than the pit."""
    ny, nx = dem.shape
    dz_dr, dz_dc = np.gradient(dem)
    dd_dr, dd_dc = np.gradient(to_river)
    path, pit = [(row, col)], None
    for _ in range(max_steps):
        r, c = path[-1]
        if not (1 <= r < ny - 2 and 1 <= c < nx - 2) or _bilinear(to_river, r, c) < stop_at:
            break
        z = _bilinear(dem, r, c)
        if pit is not None and z < pit - 0.1:
            pit = None
        g = np.array([_bilinear(dz_dr, r, c), _bilinear(dz_dc, r, c)])
        if pit is None:
            nxt = (r - step_px * g[0] / max(np.hypot(*g), 1e-9), c - step_px * g[1] / max(np.hypot(*g), 1e-9))
            if np.hypot(*g) > 1e-3 and _bilinear(dem, *np.clip(nxt, 0, (ny - 1.001, nx - 1.001))) < z:
                path.append(nxt)
                continue
            pit = z
        d = np.array([_bilinear(dd_dr, r, c), _bilinear(dd_dc, r, c)])
        path.append((r - step_px * d[0] / max(np.hypot(*d), 1e-9), c - step_px * d[1] / max(np.hypot(*d), 1e-9)))
    return np.array(path)


def tributaries(
    rng: np.random.Generator,
    dem_smooth: np.ndarray,
    slope_deg: np.ndarray,
    grid: GeoBox,
    river: RiverForm,
    axis: shapely.LineString,
    floor_m: float,
    window: shapely.Polygon,
    avoid: shapely.Geometry,
) -> gpd.GeoDataFrame:
    """1-4 streams, 3-15 m wide at the mouth and narrower up the hill, each running from a hillside point
    by steepest descent to the valley floor, then meandering across it to the river (or off the window);
    about half seasonal, dry from February to April; partly under the canopy on the hillside
    (``openness``)."""
    t, res = grid.affine, grid.resolution.x
    on_axis = rasterize([axis], out_shape=dem_smooth.shape, transform=t, all_touched=True).astype(bool)
    to_axis = (ndimage.distance_transform_edt(~on_axis) * res).astype(np.float32)
    left, bottom, right, top = window.bounds
    rows = []
    for _ in range(int(rng.integers(1, 5))):
        for _ in range(60):
            x, y = rng.uniform(left, right), rng.uniform(bottom, top)
            r, c = (t.f - y) / res, (x - t.c) / res
            d = to_axis[int(r), int(c)]
            if d < floor_m + 200 or d > floor_m + 2000 or slope_deg[int(r), int(c)] < 12:
                continue
            path = steepest_descent(dem_smooth, to_axis, r, c, floor_m)
            xy = np.c_[t.c + (path[:, 1] + 0.5) * res, t.f - (path[:, 0] + 0.5) * res]
            if len(xy) < 20:
                continue
            end = shapely.Point(xy[-1])
            if not river.belt.is_empty and shapely.distance(end, axis) < floor_m + res:
                # across the floor it meanders, bends 40-150 m apart
                run = shapely.LineString(shapely.get_coordinates(shapely.shortest_line(end, river.belt)))
                if run.length > 20:
                    pts = _resample(run, 5.0)
                    wavelength = rng.uniform(40, 150)
                    swing = rng.uniform(0.05, 0.2) * wavelength * np.sin(np.pi * _along(pts) / run.length)
                    pts = pts + _normals(pts) * (swing * np.sin(2 * np.pi * _along(pts) / wavelength))[:, None]
                    xy = np.r_[xy, pts[1:]]
            line = shapely.LineString(xy)
            if line.length < 300 or line.intersects(avoid):
                continue
            pts = _resample(line, 5.0)
            mouth = rng.uniform(3.0, 15.0)
            width = mouth * (0.4 + 0.6 * _along(pts) / max(line.length, 1.0))
            rows.append(
                {
                    "seasonal": float(rng.random() < 0.5),
                    "openness": rng.uniform(0.4, 1.0),
                    "clarity": rng.uniform(0.3, 1.0),
                    "sand": rng.uniform(0.1, 0.6),
                    "width_m": mouth,
                    "geometry": ribbon(pts, width),
                }
            )
            avoid = avoid.union(rows[-1]["geometry"].buffer(100))
            break
    return gpd.GeoDataFrame(
        rows,
        columns=["seasonal", "openness", "clarity", "sand", "width_m", "geometry"],
        geometry="geometry",
        crs=grid.crs,
    )


def _point_in(rng: np.random.Generator, area: shapely.Geometry, tries: int = 64) -> shapely.Point | None:
    if area.is_empty:
        return None
    left, bottom, right, top = area.bounds
    pts = shapely.points(np.c_[rng.uniform(left, right, tries), rng.uniform(bottom, top, tries)])
    inside = pts[shapely.contains(area, pts)]
    return inside[0] if len(inside) else None


def _pixel_values(a: np.ndarray, grid: GeoBox, xy: np.ndarray) -> np.ndarray:
    t, res = grid.affine, grid.resolution.x
    r = np.clip(((t.f - xy[:, 1]) / res).astype(int), 0, a.shape[0] - 1)
    c = np.clip(((xy[:, 0] - t.c) / res).astype(int), 0, a.shape[1] - 1)
    return a[r, c]


def fish_pond_farms(
    rng: np.random.Generator,
    free: shapely.Geometry,
    slope_deg: np.ndarray,
    grid: GeoBox,
    start: float,
    end: float,
    years: range,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Farms of 3-15 rectangular fish ponds (sides 15-60 m, 3-6 m bunds between) in rows on flat floor
    (under FLAT_FLOOR_DEG) inside ``free``: half dug before the period, half during it, some farms
    extended a year or two later. Each pond is drained to mud for 1-3 months in the dry season of some
    years (the harvest). Returns the farms (bunds and all) and their ponds."""
    farms, ponds = [], []
    for farm_id in range(1 + int(rng.poisson(1.0 * free.area / 1e6))):
        for _ in range(100):
            p = _point_in(rng, free)
            if p is None:
                break
            n, cols = int(rng.integers(3, 16)), int(rng.integers(2, 6))
            a, b, bund, angle = rng.uniform(15, 60), rng.uniform(15, 60), rng.uniform(3, 6), rng.uniform(0, math.pi)
            sides = np.clip(np.c_[a * rng.uniform(0.85, 1.0, n), b * rng.uniform(0.85, 1.0, n)], 15, 60)
            cells = [divmod(k, cols) for k in range(n)]
            boxes = [
                shapely.box(j * (a + bund), -i * (b + bund), j * (a + bund) + w, -i * (b + bund) + h)
                for (i, j), (w, h) in zip(cells, sides)
            ]
            boxes = [
                affinity.translate(affinity.rotate(g, angle, origin=(0, 0), use_radians=True), p.x, p.y) for g in boxes
            ]
            farm = shapely.union_all(boxes).buffer(bund, join_style="mitre")
            centres = shapely.get_coordinates(shapely.centroid(np.array(boxes)))
            if not free.contains(farm) or _pixel_values(slope_deg, grid, centres).max() >= FLAT_FLOOR_DEG:
                continue
            dug = start - rng.uniform(30, 3000) if rng.random() < 0.5 else rng.uniform(start, end)
            later = rng.random() < 0.3  # extended: the far half of the farm dug a year or two on
            pond_dug = dug + rng.uniform(0, 90, n) + later * (np.arange(n) >= n // 2) * rng.uniform(365, 730)
            drain = np.full((n, len(years)), NEVER)
            for k, year in enumerate(years):
                drained = rng.random(n) < 0.3
                drain[drained, k] = _day(date(year, 1, 1)) + rng.uniform(-30, 150, int(drained.sum()))
            for g, d, dr, green in zip(boxes, pond_dug, drain, rng.uniform(0.4, 1.0, n)):
                ponds.append(
                    {
                        "farm_id": farm_id,
                        "dug_day": d,
                        "green": green,
                        "drain": dr,
                        "drain_days": rng.uniform(30, 90),
                        "geometry": g,
                    }
                )
            farms.append({"farm_id": farm_id, "dug_day": float(pond_dug.min()), "geometry": farm})
            free = free.difference(farm.buffer(30))
            break
    farms = gpd.GeoDataFrame(farms, columns=["farm_id", "dug_day", "geometry"], geometry="geometry", crs=grid.crs)
    ponds = gpd.GeoDataFrame(
        ponds,
        columns=["farm_id", "dug_day", "green", "drain", "drain_days", "geometry"],
        geometry="geometry",
        crs=grid.crs,
    )
    return farms, ponds


def gold_workings(
    rng: np.random.Generator,
    river: RiverForm,
    free: shapely.Geometry,
    window: shapely.Polygon,
    start: float,
    end: float,
    crs,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Alluvial gold workings on the bank: grey gravel and mud 0.3-5 ha in all, with 1-4 turbid ponds of
    10-40 m in each part, started in a random year; half of them move along the river a reach a year.
    Returns the yearly parts (``start_day`` each) and their ponds."""
    line = river.centreline
    inside = line.intersection(window).length / 1000.0
    parts, ponds = [], []
    for working in range(1 + int(rng.poisson(0.3 * inside))):
        for _ in range(30):
            s0 = rng.uniform(0, line.length)
            if not window.contains(line.interpolate(s0)):
                continue
            stages = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
            areas = rng.uniform(0.3e4, 5e4) * rng.dirichlet(np.full(stages, 2.0))
            side, way = rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0])
            day = rng.uniform(start - 730, end - 60)
            s, placed = s0, []
            for area in np.maximum(areas, 3000.0):
                r = math.sqrt(area / math.pi)
                a, b = line.interpolate(s - 5), line.interpolate(s + 5)
                tangent = np.array([b.x - a.x, b.y - a.y]) / max(a.distance(b), 1e-9)
                centre = np.array([line.interpolate(s).x, line.interpolate(s).y]) + side * np.array(
                    [-tangent[1], tangent[0]]
                ) * (r * 0.8 + 10)
                g = _blob(rng, *centre, area, rng.uniform(1.5, 3.0), math.atan2(tangent[1], tangent[0]))
                g = g.difference(river.belt.buffer(3)).intersection(free)
                if placed:  # each year's part is new ground beside the last
                    g = g.difference(shapely.union_all([q for q, _ in placed]))
                g = max(getattr(g, "geoms", [g]), key=lambda part: part.area) if not g.is_empty else g
                if g.is_empty or g.area < 1500:
                    break
                placed.append((g, day))
                s, day = s + way * r * 1.6, day + rng.uniform(300, 450)
            if not placed:
                continue
            for g, d in placed:
                parts.append(
                    {
                        "working_id": working,
                        "start_day": d,
                        "gravel": rng.uniform(0.4, 0.8),
                        "mud": rng.uniform(0.1, 0.3),
                        "geometry": g,
                    }
                )
                for _ in range(int(rng.integers(1, 5))):
                    size = rng.uniform(10, 40)
                    p = _point_in(rng, g.buffer(-size / 2 - 3))
                    if p is None:
                        continue
                    shape_ = "round" if rng.random() < 0.4 else "square"
                    pond = pond_polygon(p.x, p.y, size, shape_, rng.uniform(0, math.pi)).intersection(g)
                    ponds.append(
                        {
                            "working_id": working,
                            "start_day": d + rng.uniform(10, 60),
                            "milky": rng.uniform(0.6, 1.0),
                            "geometry": pond,
                        }
                    )
            free = free.difference(shapely.union_all([g for g, _ in placed]).buffer(30))
            break
    parts = gpd.GeoDataFrame(
        parts, columns=["working_id", "start_day", "gravel", "mud", "geometry"], geometry="geometry", crs=crs
    )
    return parts, gpd.GeoDataFrame(
        ponds, columns=["working_id", "start_day", "milky", "geometry"], geometry="geometry", crs=crs
    )


def road_cuts(
    rng: np.random.Generator,
    window: shapely.Polygon,
    slope_deg: np.ndarray,
    grid: GeoBox,
    upslope_of,
    keep_out: shapely.Geometry,
    years: range,
) -> gpd.GeoDataFrame:
    """1-3 new roads across the hillsides, 5-15 m of cut and track, 0.5-3 km long: legs of 100-400 m
    along the contour climbing at 4-12 degrees, joined by hairpins; bare laterite, or grey where they
    are gravelled, permanent from the dry season they are built in. A road ends where it would run into
    ``keep_out`` or out of the window."""
    rows = []
    left, bottom, right, top = window.bounds
    for _ in range(int(rng.integers(1, 4))):
        width = rng.uniform(5, 15)
        blocked = keep_out.buffer(width / 2 + 5, quad_segs=4)
        shapely.prepare(blocked)
        for _ in range(40):
            x, y = rng.uniform(left, right), rng.uniform(bottom, top)
            slope = _pixel_values(slope_deg, grid, np.array([[x, y]]))[0]
            if not 10 <= slope <= 40 or shapely.contains_xy(blocked, x, y):
                continue
            length, climb = rng.uniform(500, 3000), math.radians(rng.uniform(4, 12))
            sign, leg, pts = rng.choice([-1.0, 1.0]), rng.uniform(100, 400), [(x, y)]
            while len(pts) * 10 < length:
                u = upslope_of(*pts[-1])
                if leg <= 0:
                    leg = rng.uniform(100, 400)
                    if rng.random() < 0.7:  # a hairpin: up the slope a road's width or two, then back
                        step = [
                            (pts[-1][0] + 10 * k * u[0], pts[-1][1] + 10 * k * u[1])
                            for k in range(1, int(rng.integers(3, 6)))
                        ]
                        sign = -sign
                    else:
                        continue
                else:
                    d = sign * np.array([u[1], -u[0]]) * math.cos(climb) + u * math.sin(climb)
                    step = [(pts[-1][0] + 10 * d[0], pts[-1][1] + 10 * d[1])]
                    leg -= 10
                if any(shapely.contains_xy(blocked, *q) or not shapely.contains_xy(window, *q) for q in step):
                    break
                pts += step
            line = shapely.LineString(pts) if len(pts) > 1 else None
            if line is None or line.length < 500:
                continue
            road = line.simplify(2.0).buffer(width / 2, quad_segs=4)
            year = int(rng.integers(years[0], years[-1] + 1))
            built = (
                _random_days(rng, year, (1, 1), (5, 15))
                if rng.random() < 0.8
                else _random_days(rng, year, (11, 1), (12, 31))
            )
            laterite = rng.random() < 0.65
            rows.append(
                {
                    "built_day": built,
                    "redness": rng.uniform(0.6, 1.0) if laterite else rng.uniform(0.0, 0.2),
                    "verge": rng.uniform(0.0, 0.15),
                    "width_m": width,
                    "length_m": line.length,
                    "geometry": road,
                }
            )
            keep_out = keep_out.union(road.buffer(60))
            break
    return gpd.GeoDataFrame(
        rows,
        columns=["built_day", "redness", "verge", "width_m", "length_m", "geometry"],
        geometry="geometry",
        crs=grid.crs,
    )


def plantations(
    rng: np.random.Generator,
    window: shapely.Polygon,
    slope_deg: np.ndarray,
    grid: GeoBox,
    upslope_of,
    keep_out: shapely.Geometry,
    years: range,
) -> gpd.GeoDataFrame:
    """Banana and rubber: 1-10 ha on gentle slopes (5-20 degrees, 3-25 where the window has none), felled
    and burnt bare in the dry season, planted 1-3 months later and green (shrub-like) 6-12 months after;
    rubber closes to a forest-like canopy over two more years and drops its leaves in February-March."""
    area_km2 = window.area / 1e6

    def make(x, y):
        u = upslope_of(x, y)
        return _blob(rng, x, y, rng.uniform(1e4, 1e5), rng.uniform(1.0, 2.5), math.atan2(u[0], -u[1]))

    n = 1 + int(rng.poisson(0.12 * area_km2))
    placed = _place(rng, n, window, slope_deg, grid, (5, 20), keep_out, make)
    if len(placed) < n:
        placed += _place(
            rng,
            n - len(placed),
            window,
            slope_deg,
            grid,
            (3, 25),
            shapely.union_all([keep_out, *[g.buffer(30) for g in placed]]),
            make,
        )
    rows = []
    for poly in placed:
        cleared = _random_days(rng, int(rng.integers(years[0], years[-1] + 1)), (1, 5), (4, 10))
        rubber = rng.random() < 0.6
        rows.append(
            {
                "cleared_day": cleared,
                "planted_day": cleared + rng.uniform(30, 100),
                "green_days": rng.uniform(180, 365),
                "canopy": 1.0 if rubber else rng.uniform(0.1, 0.3),
                "wintering": float(rubber),
                "redness": rng.uniform(0.2, 0.9),
                "geometry": poly,
            }
        )
    return gpd.GeoDataFrame(
        rows,
        columns=["cleared_day", "planted_day", "green_days", "canopy", "wintering", "redness", "geometry"],
        geometry="geometry",
        crs=grid.crs,
    )


def valley_villages(
    rng: np.random.Generator,
    window: shapely.Polygon,
    slope_deg: np.ndarray,
    grid: GeoBox,
    keep_out: shapely.Geometry,
    start: float,
    end: float,
) -> gpd.GeoDataFrame:
    """One or two villages of 0.5-3 ha on the floor or a gentle slope (under 12 degrees), away from the
    mines: most older than the period; each grows by a second, smaller blob 1-4 years on."""

    def make(x, y):
        return _blob(rng, x, y, rng.uniform(5e3, 3e4), rng.uniform(1.0, 2.0), rng.uniform(0, math.pi))

    rows = []
    for village in _place(rng, 1 + int(rng.random() < 0.5), window, slope_deg, grid, (0, 12), keep_out, make):
        built = start - rng.uniform(365, 20 * 365) if rng.random() < 0.7 else rng.uniform(start, end)
        bare, roof = rng.uniform(0.4, 0.7), rng.uniform(0.1, 0.3)
        rows.append({"built_day": built, "bare": bare, "roof": roof, "geometry": village})
        keep_out = keep_out.union(village.buffer(30))
        r = math.sqrt(village.area / math.pi)
        for _ in range(12):
            area, a = village.area * rng.uniform(0.3, 0.8), rng.uniform(0, 2 * math.pi)
            d = r + 0.6 * math.sqrt(area / math.pi)
            c = village.centroid
            more = _blob(
                rng, c.x + d * math.cos(a), c.y + d * math.sin(a), area, rng.uniform(1.0, 2.0), rng.uniform(0, math.pi)
            ).difference(village)
            if window.contains(more) and not more.intersects(keep_out.difference(village.buffer(30))):
                rows.append(
                    {
                        "built_day": max(built, start) + rng.uniform(365, 4 * 365),
                        "bare": bare,
                        "roof": roof,
                        "geometry": more,
                    }
                )
                keep_out = keep_out.union(more.buffer(30))
                break
    return gpd.GeoDataFrame(rows, columns=["built_day", "bare", "roof", "geometry"], geometry="geometry", crs=grid.crs)


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


def valley_river_cover(
    day: float, day_of_year: float, stage, mud, grass, clarity, silt_low, silt_high, sand, flood, first_year
) -> np.ndarray:
    """The bed's zones under water when the river stands above their stage (that year's flood scaled by
    ``flood``), else bare: damp mud near the water, sand and gravel, grass on the high bars. Floods bring
    silt: a clear river (``clarity``) is clear only at low water."""
    year = int(np.clip(_date(day).year - int(first_year), 0, len(flood) - 1))
    level = float(np.interp(day_of_year, RIVER_STAGE[:, 0], RIVER_STAGE[:, 1])) * float(flood[year])
    wet = np.clip((level - stage) / 0.15, 0.0, 1.0)
    silt = silt_low + (silt_high - silt_low) * min(level, 1.0)
    clear = clarity * (1.0 - min(level, 1.0))
    w = np.zeros((len(stage), len(COVERS)), dtype=np.float32)
    w[:, COVER["milky_water"]] = wet * silt
    w[:, COVER["clear_water"]] = wet * (1 - silt) * clear
    w[:, COVER["river_water"]] = wet * (1 - silt) * (1 - clear)
    dry = 1.0 - wet
    bed = dry * (1.0 - mud - grass)
    w[:, COVER["mud"]], w[:, COVER["shrub"]] = dry * mud, dry * grass
    w[:, COVER["sand"]], w[:, COVER["gravel"]] = bed * sand, bed * (1 - sand)
    return w


def stream_cover(day: float, day_of_year: float, seasonal, openness, clarity, sand) -> np.ndarray:
    """Water where the canopy leaves the stream open (``openness``), silty in the monsoon; a seasonal
    stream's bed is dry gravel and grass from February to April."""
    flow = np.where(seasonal > 0, np.interp(day_of_year, STREAM_FLOW[:, 0], STREAM_FLOW[:, 1]), 1.0)
    silt = 0.35 * float(np.interp(day_of_year, RIVER_STAGE[:, 0], RIVER_STAGE[:, 1]))
    water, dry = flow * openness, (1 - flow) * openness
    w = np.zeros((len(seasonal), len(COVERS)), dtype=np.float32)
    w[:, COVER["milky_water"]] = water * silt
    w[:, COVER["clear_water"]] = water * (1 - silt) * clarity
    w[:, COVER["river_water"]] = water * (1 - silt) * (1 - clarity)
    w[:, COVER["sand"]], w[:, COVER["gravel"]] = dry * 0.5 * sand, dry * 0.5 * (1 - sand)
    w[:, COVER["shrub"]] = dry * 0.5
    return w


def fish_farm_cover(day: float, day_of_year: float, dug_day) -> np.ndarray:
    """A farm's ground: paddy until it is dug (two months of mud and spoil), grassy bunds after."""
    w = paddy_cover(day, day_of_year, np.zeros(len(dug_day))) * (day < dug_day - 60)[:, None]
    digging = (day >= dug_day - 60) & (day < dug_day)
    w[digging, COVER["mud"]], w[digging, COVER["grey_soil"]] = 0.5, 0.5
    bunds = day >= dug_day
    w[bunds, COVER["shrub"]], w[bunds, COVER["stubble"]], w[bunds, COVER["grey_soil"]] = 0.5, 0.3, 0.2
    return w


def fish_pond_cover(day: float, day_of_year: float, dug_day, green, drain, drain_days) -> np.ndarray:
    """Green, algal water (``green`` of it; the rest plain river water) filled within weeks of digging;
    mud while drained for the harvest (``drain``: a start day per year, NEVER if not drained)."""
    shown = day >= dug_day
    drained = ((day >= drain) & (day < drain + drain_days[:, None])).any(axis=1)
    water = _ramp(day, dug_day, dug_day + 20) * shown * ~drained
    w = np.zeros((len(dug_day), len(COVERS)), dtype=np.float32)
    w[:, COVER["algal_water"]], w[:, COVER["river_water"]] = water * green, water * (1 - green)
    w[:, COVER["mud"]] = shown * (1 - water)
    return w


def gold_working_cover(day: float, day_of_year: float, start_day, gravel, mud) -> np.ndarray:
    """The bank stripped within a month to grey gravel, spoil and mud, kept bare while it is worked."""
    shown = day >= start_day
    k = _ramp(day, start_day, start_day + 30)
    bare = k * shown
    w = np.zeros((len(start_day), len(COVERS)), dtype=np.float32)
    w[:, COVER["shrub"]] = (1 - k) * shown
    w[:, COVER["gravel"]], w[:, COVER["grey_soil"]] = bare * gravel * (1 - mud), bare * (1 - gravel) * (1 - mud)
    w[:, COVER["mud"]] = bare * mud
    return w


def gold_pond_cover(day: float, day_of_year: float, start_day, milky) -> np.ndarray:
    """Sluice ponds: turbid, clay-laden water with a muddy rim."""
    shown = (day >= start_day).astype(np.float32)
    w = np.zeros((len(start_day), len(COVERS)), dtype=np.float32)
    w[:, COVER["milky_water"]], w[:, COVER["mud"]] = shown * milky, shown * (1 - milky)
    return w


def road_cut_cover(day: float, day_of_year: float, built_day, redness, verge) -> np.ndarray:
    """Forest felled and bulldozed over six weeks into a bare cut and track, laterite or grey gravel,
    with grass on the verges."""
    shown = day >= built_day
    k = _ramp(day, built_day, built_day + 45)
    bare = k * (1 - verge) * shown
    w = np.zeros((len(built_day), len(COVERS)), dtype=np.float32)
    w[:, COVER["forest"]] = (1 - k) * shown
    w[:, COVER["laterite"]] = bare * redness
    w[:, COVER["gravel"]], w[:, COVER["grey_soil"]] = bare * (1 - redness) * 0.5, bare * (1 - redness) * 0.5
    w[:, COVER["shrub"]] = k * verge * shown
    return w


def plantation_cover(
    day: float, day_of_year: float, cleared_day, planted_day, green_days, canopy, wintering, redness
) -> np.ndarray:
    """Slash for a month, bare soil until planting, then green: shrub-like within ``green_days``, and up
    to a forest-like canopy (``canopy``: rubber 1, banana less) over two more years. Rubber sheds its
    leaves in February-March."""
    w = np.zeros((len(cleared_day), len(COVERS)), dtype=np.float32)
    felled = (day >= cleared_day) & (day < cleared_day + 30)
    w[felled, COVER["shrub"]], w[felled, COVER["stubble"]] = 0.5, 0.5
    planted = day >= planted_day
    k = _ramp(day, planted_day, planted_day + green_days)
    k2 = _ramp(day, planted_day + green_days, planted_day + green_days + 730) * canopy
    soil = ((day >= cleared_day + 30) & ~planted) + planted * (1 - k)
    w[:, COVER["laterite"]], w[:, COVER["grey_soil"]] = soil * redness, soil * (1 - redness)
    w[:, COVER["shrub"]] += planted * k * (1 - k2)
    leafless = wintering * 0.4 * _ramp(day_of_year, 30, 45) * (1 - _ramp(day_of_year, 75, 95))
    w[:, COVER["forest"]] = planted * k * k2 * (1 - leafless)
    w[:, COVER["stubble"]] += planted * k * k2 * leafless
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


@dataclass
class Valley:
    """The valley scenario's features, each frame with the columns of its timeline."""

    river: RiverForm
    river_colour: dict  # the river's water and bed through the years (valley_river_cover's scalars)
    streams: gpd.GeoDataFrame
    gold_workings: gpd.GeoDataFrame
    gold_ponds: gpd.GeoDataFrame
    fish_farms: gpd.GeoDataFrame
    fish_ponds: gpd.GeoDataFrame
    villages: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    plantations: gpd.GeoDataFrame

    def on_the_floor(self) -> shapely.Geometry:
        """What paddy fields give way to."""
        return shapely.union_all(
            [
                *self.streams.geometry.values,
                *self.gold_workings.geometry.values,
                *self.fish_farms.geometry.values,
                *self.villages.geometry.values,
            ]
        )


def valley_features(
    seed: int,
    river: RiverForm,
    axis: shapely.LineString,
    floor: shapely.Geometry,
    floor_m: float,
    grid: GeoBox,
    window: shapely.Polygon,
    slope_deg: np.ndarray,
    dem_smooth: np.ndarray,
    upslope_of,
    mining_zone: shapely.Geometry,
    taken: shapely.Geometry,
    start: date,
    end: date,
    years: range,
) -> Valley:
    """Streams, gold workings, fish ponds, villages, roads and plantations, placed in that order, each
    clear of the mines (``mining_zone``), of what is already there (``taken``: swidden, landslides,
    villages beside mines) and of each other. The river is drawn first (it shapes the DEM's floor)."""
    t0, t1 = _day(start), _day(end)
    rng = _rng(seed, "valley_river", 1)
    colour = {
        "clarity": rng.uniform(0.0, 1.0),
        "silt_low": rng.uniform(0.0, 0.2),
        "silt_high": rng.uniform(0.2, 0.6),
        "sand": rng.uniform(0.1, 0.7),
        "flood": rng.uniform(0.75, 1.1, len(years)),
        "first_year": years[0],
    }
    mines = shapely.union(mining_zone, taken)
    streams = tributaries(_rng(seed, "stream"), dem_smooth, slope_deg, grid, river, axis, floor_m, window, mines)
    wet = shapely.union_all([river.belt, *streams.geometry.values])
    free = floor.intersection(window).difference(wet.buffer(15)).difference(mines.buffer(30))
    gold, gold_ponds = gold_workings(_rng(seed, "gold"), river, free, window, t0, t1, grid.crs)
    free = free.difference(shapely.union_all(gold.geometry.values).buffer(30))
    farms, fish = fish_pond_farms(_rng(seed, "fish_pond"), free, slope_deg, grid, t0, t1, years)
    built = shapely.union_all([mines, wet.buffer(15), *gold.geometry.buffer(30), *farms.geometry.buffer(30)])
    villages = valley_villages(_rng(seed, "valley_village"), window, slope_deg, grid, built, t0, t1)
    built = shapely.union_all([built, *villages.geometry.buffer(30)])
    # roads cross swidden and old landslides as they find them; they keep off the mines and the floor
    roads = road_cuts(
        _rng(seed, "road_cut"),
        window,
        slope_deg,
        grid,
        upslope_of,
        built.difference(taken).union(mining_zone).union(floor),
        range(start.year - 1, end.year + 1),
    )
    built = shapely.union_all([built, *roads.geometry.buffer(30)])
    farms_of_trees = plantations(
        _rng(seed, "plantation"), window, slope_deg, grid, upslope_of, built, range(start.year - 1, end.year + 1)
    )
    return Valley(river, colour, streams, gold, gold_ponds, farms, fish, villages, roads, farms_of_trees)


def valley_layers(v: Valley, grid: GeoBox) -> dict[str, list[CoverLayer]]:
    """The valley's cover layers by where they go in the paint order: ``ground`` over the paddies,
    ``built`` over swidden and landslides, ``river`` in place of the standard river, ``water`` last
    but the mining ponds."""
    zones = gpd.GeoDataFrame(
        {
            "stage": [z[1] for z in RIVER_ZONES],
            "mud": [z[2] for z in RIVER_ZONES],
            "grass": [z[3] for z in RIVER_ZONES],
        },
        geometry=v.river.zones,
        crs=grid.crs,
    )
    drain = np.stack(v.fish_ponds["drain"].to_list()) if len(v.fish_ponds) else np.zeros((0, 1))
    return {
        "ground": [
            cover_layer("fish_farm", v.fish_farms, grid, fish_farm_cover, dug_day="dug_day"),
            cover_layer(
                "plantation",
                v.plantations,
                grid,
                plantation_cover,
                cleared_day="cleared_day",
                planted_day="planted_day",
                green_days="green_days",
                canopy="canopy",
                wintering="wintering",
                redness="redness",
            ),
        ],
        "built": [
            cover_layer(
                "road_cut", v.roads, grid, road_cut_cover, built_day="built_day", redness="redness", verge="verge"
            ),
            cover_layer(
                "valley_village", v.villages, grid, village_cover, built_day="built_day", bare="bare", roof="roof"
            ),
            cover_layer(
                "gold_working",
                v.gold_workings,
                grid,
                gold_working_cover,
                start_day="start_day",
                gravel="gravel",
                mud="mud",
            ),
            cover_layer(
                "stream",
                v.streams,
                grid,
                stream_cover,
                seasonal="seasonal",
                openness="openness",
                clarity="clarity",
                sand="sand",
            ),
        ],
        "river": [
            cover_layer(
                "river", zones, grid, valley_river_cover, stage="stage", mud="mud", grass="grass", **v.river_colour
            )
        ],
        "water": [
            cover_layer(
                "fish_pond",
                v.fish_ponds,
                grid,
                fish_pond_cover,
                dug_day="dug_day",
                green="green",
                drain=drain,
                drain_days="drain_days",
            ),
            cover_layer("gold_pond", v.gold_ponds, grid, gold_pond_cover, start_day="start_day", milky="milky"),
        ],
    }


def valley_confounders(v: Valley, start: date) -> list[tuple[str, gpd.GeoDataFrame, np.ndarray]]:
    """(kind, features, first day) of what the valley adds to the truth's confounders. A gold working's
    ponds lie inside its parts and a fish farm's ponds are the farm's features: confounders, not the
    truth's ponds."""
    t0 = _day(start)
    return [
        ("stream", v.streams, np.full(len(v.streams), t0)),
        ("fish_pond", v.fish_ponds, v.fish_ponds["dug_day"].to_numpy()),
        ("gold_working", v.gold_workings, v.gold_workings["start_day"].to_numpy()),
        ("road_cut", v.roads, v.roads["built_day"].to_numpy()),
        ("plantation", v.plantations, v.plantations["cleared_day"].to_numpy()),
        ("village", v.villages, v.villages["built_day"].to_numpy()),
    ]


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
            self._illumination[step, solar_hour] = terrain_illumination(
                self.dz_dx, self.dz_dy, self.dem20, el, az, self.scenario.diffuse_sky
            )
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


def build_landscape(
    seed: int,
    window: tuple[float, float, float, float],
    crs: CRS,
    start: date,
    end: date,
    pools: gpd.GeoDataFrame,
    scenario: Scenario = Scenario(),
) -> tuple[Landscape, Truth, np.ndarray, GeoBox]:
    """The DEM, land cover and mining of the simulated AOI, and its truth.

    Returns the landscape, the truth, and the DEM on a 10 m UTM grid padded beyond the image (so that its
    lon/lat reprojection covers the image footprint) with that grid.
    """
    left, bottom, right, top = window
    image = (left - IMAGE_MARGIN_M, bottom - IMAGE_MARGIN_M, right + IMAGE_MARGIN_M, top + IMAGE_MARGIN_M)
    grid, grid20 = snapped_grid(image, crs, RESOLUTION_M), snapped_grid(image, crs, 2 * RESOLUTION_M)
    pad = 10
    dem_grid = snapped_grid(
        (
            image[0] - pad * RESOLUTION_M,
            image[1] - pad * RESOLUTION_M,
            image[2] + pad * RESOLUTION_M,
            image[3] + pad * RESOLUTION_M,
        ),
        crs,
        RESOLUTION_M,
    )
    window_box, image_box = shapely.box(*window), shapely.box(*grid.boundingbox)
    xy = shapely.get_coordinates(pools.geometry.values)
    inside = pools[(xy[:, 0] >= left) & (xy[:, 0] < right) & (xy[:, 1] >= bottom) & (xy[:, 1] < top)]
    inside = inside.reset_index(drop=True)
    inside_xy = shapely.get_coordinates(inside.geometry.values)

    rng = _rng(seed, "river")
    floor_m = rng.uniform(100, 220)
    centreline = river_course(rng, image, inside_xy, floor_m + 50)
    river_form = None
    if scenario.valley_confounders:
        river_form = valley_river(_rng(seed, "valley_river"), centreline, floor_m, image_box)
        channel = river_form.belt
    else:
        channel = river_channel(rng, centreline)
    dem_padded = valley_terrain(_rng(seed, "terrain"), dem_grid, centreline, floor_m, scenario.hillside_slope_deg)
    dem = dem_padded[pad:-pad, pad:-pad]
    dz_dy, dz_dx = np.gradient(dem.astype(np.float64), RESOLUTION_M)
    dz_dy = -dz_dy  # rows run south
    dem_smooth = ndimage.gaussian_filter(dem, 8)
    slope_deg = np.degrees(np.arctan(np.hypot(*np.gradient(ndimage.gaussian_filter(dem, 2), RESOLUTION_M))))
    dem20 = dem.reshape(dem.shape[0] // 2, 2, dem.shape[1] // 2, 2).mean(axis=(1, 3))

    t0, t1 = _day(start), _day(end)
    mining = mining_sites(
        _rng(seed, "sites"),
        inside,
        shapely.get_coordinates(pools.geometry.values),
        grid,
        dem_smooth,
        image_box,
        t0,
        t1,
        scenario,
    )
    mining_zone = shapely.union(
        shapely.union_all(mining.clearings.geometry.values), shapely.multipoints(inside_xy)
    ).buffer(120, quad_segs=4)
    floor = centreline.buffer(floor_m).intersection(image_box)
    keep_out = shapely.union_all([mining_zone, floor.buffer(50)])
    upslope_of = partial(_upslope, dem_smooth, grid)
    years = range(start.year - 2, end.year + 1)  # earlier clearings are still regrowing at the start
    swiddens = swidden_fields(
        _rng(seed, "swidden"), window_box, slope_deg, grid, upslope_of, keep_out, years, scenario.swidden_rate
    )
    keep_out = keep_out.union(shapely.union_all(swiddens.geometry.values).buffer(30))
    landslides = landslide_scars(
        _rng(seed, "landslide"), window_box, slope_deg, grid, upslope_of, keep_out, years, scenario.landslide_rate
    )
    paddies = paddy_fields(_rng(seed, "paddy"), floor.difference(channel.buffer(5)), mining_zone.buffer(-60), crs)
    river = gpd.GeoDataFrame(geometry=[channel.intersection(image_box)], crs=crs)
    villages = None
    if scenario.village_share > 0:
        avoid = shapely.union_all([*mining.clearings.geometry.values, *mining.ponds.geometry.values, channel])
        villages = villages_beside_mines(
            _rng(seed, "village"), mining.clearings, scenario.village_share, window_box, avoid, t1
        )
    valley, painted = None, {"ground": [], "built": [], "water": []}
    if river_form is not None:
        taken = shapely.union_all(
            [
                *swiddens.geometry.values,
                *landslides.geometry.values,
                *(villages.geometry.values if villages is not None else []),
            ]
        )
        valley = valley_features(
            seed,
            river_form,
            centreline,
            floor,
            floor_m,
            grid,
            window_box,
            slope_deg,
            dem_smooth,
            upslope_of,
            mining_zone,
            taken,
            start,
            end,
            years,
        )
        fields = shapely.difference(paddies.geometry.values, valley.on_the_floor().buffer(5))
        keep = shapely.area(fields) > 500  # slivers of a field left beside a fish farm are bunds, not paddy
        paddies = gpd.GeoDataFrame(
            {"phase_days": paddies["phase_days"].to_numpy()[keep]}, geometry=fields[keep], crs=crs
        )
        painted = valley_layers(valley, grid)

    ponds = mining.ponds
    layers = [
        cover_layer("paddy", paddies, grid, paddy_cover, phase_days="phase_days"),
        *painted["ground"],
        cover_layer(
            "swidden",
            swiddens,
            grid,
            swidden_cover,
            cut_day="cut_day",
            burn_day="burn_day",
            plant_day="plant_day",
            harvest_day="harvest_day",
            regrow_days="regrow_days",
        ),
        cover_layer(
            "landslide",
            landslides,
            grid,
            landslide_cover,
            slide_day="slide_day",
            heal_days="heal_days",
            redness="redness",
        ),
        *(
            [cover_layer("village", villages, grid, village_cover, built_day="built_day", bare="bare", roof="roof")]
            if villages is not None and len(villages)
            else []
        ),
        *painted["built"],
        cover_layer(
            "clearing",
            mining.clearings,
            grid,
            clearing_cover,
            cleared_day="cleared_day",
            abandoned_day="abandoned_day",
            heal_days="heal_days",
            greyness="greyness",
        ),
        *(painted["river"] if valley is not None else [cover_layer("river", river, grid, river_cover)]),
        *painted["water"],
        cover_layer(
            "pond",
            ponds,
            grid,
            pond_cover,
            built_day="built_day",
            abandoned_day="abandoned_day",
            heal_days="heal_days",
            cover_index=ponds["colour"].map(POND_COVER).to_numpy(),
        ),
    ]
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
    landscape = Landscape(
        grid,
        grid20,
        lat,
        forest_background(_rng(seed, "background"), grid.shape.yx),
        layers,
        dz_dx.astype(np.float32),
        dz_dy.astype(np.float32),
        dem20,
        scenario=scenario,
    )
    truth = ground_truth(
        mining,
        swiddens,
        landslides,
        paddies,
        river,
        window_box,
        start,
        end,
        villages,
        valley_confounders(valley, start) if valley is not None else None,
    )
    return landscape, truth, dem_padded, dem_grid


def ground_truth(
    mining: Mining,
    swiddens,
    landslides,
    paddies,
    river,
    window_box,
    start: date,
    end: date,
    villages: gpd.GeoDataFrame | None = None,
    more: list[tuple[str, gpd.GeoDataFrame, np.ndarray]] | None = None,
) -> Truth:
    """Contract 5 layers: what exists by the end of the period, clipped to the AOI window; first_year is
    never before start_year (mining older than the period counts in its first year). ``more`` adds
    confounders as (kind, features, the day each first exists)."""
    t1, y0 = _day(end), start.year

    def iso(days):
        return [_date(d).isoformat() if d <= t1 else "" for d in days]

    def first_year(days):
        return np.maximum([_date(d).year for d in days], y0).astype(int)

    p = mining.ponds[mining.ponds["built_day"] <= t1].reset_index(drop=True)
    area = area_m2(p.geometry).to_numpy()
    covered = p["colour"].str.startswith("plastic").to_numpy()
    ponds = gpd.GeoDataFrame(
        {
            "pond_id": np.arange(len(p)),
            "site_id": p["site_id"].to_numpy(),
            "first_year": first_year(p["built_day"]),
            "built": iso(p["built_day"]),
            "abandoned": iso(p["abandoned_day"]),
            "shape": p["shape"].to_numpy(),
            "colour": p["colour"].to_numpy(),
            "covered": covered,
            "detectable": ~covered & (area >= DETECTABLE_AREA_M2),
            "area_m2": area,
        },
        geometry=p.geometry.values,
        crs=p.crs,
    )

    c = mining.clearings
    geoms = shapely.intersection(c.geometry.values, window_box)
    keep = ~shapely.is_empty(geoms)
    c, geoms = c[keep].reset_index(drop=True), geoms[keep]
    clearings = gpd.GeoDataFrame(
        {
            "clearing_id": np.arange(len(c)),
            "site_id": c["site_id"].to_numpy(),
            "first_year": first_year(c["cleared_day"]),
            "cleared": iso(c["cleared_day"]),
            "abandoned": iso(c["abandoned_day"]),
            "area_m2": shapely.area(geoms),
        },
        geometry=geoms,
        crs=c.crs,
    )

    site_ids = np.arange(len(mining.clearings))
    hulls = [
        shapely.convex_hull(
            shapely.union_all([*clearings.geometry[clearings["site_id"] == s], *ponds.geometry[ponds["site_id"] == s]])
        )
        for s in site_ids
    ]
    sites = gpd.GeoDataFrame(
        {
            "site_id": site_ids,
            "first_year": first_year(mining.clearings["cleared_day"]),
            "n_ponds": np.bincount(ponds["site_id"], minlength=len(site_ids)),
        },
        geometry=hulls,
        crs=c.crs,
    )
    sites = sites[~sites.geometry.is_empty].reset_index(drop=True)

    kinds = [
        ("swidden", swiddens, swiddens["year"].to_numpy()),
        ("landslide", landslides, landslides["year"].to_numpy()),
        ("paddy", paddies, np.full(len(paddies), y0)),
        ("river", river, np.full(len(river), y0)),
    ]
    if villages is not None:
        for k in ("village", "road"):
            part = villages[villages["kind"] == k]
            kinds.append((k, part, first_year(part["built_day"]) if len(part) else np.zeros(0, int)))
    for k, part, days in more or ():
        there = np.asarray(days) <= t1
        kinds.append((k, part[there], first_year(np.asarray(days)[there]) if there.any() else np.zeros(0, int)))
    geoms = np.concatenate([shapely.intersection(g.geometry.values, window_box) for _, g, _ in kinds])
    confounders = gpd.GeoDataFrame(
        {
            "kind": np.concatenate([[k] * len(g) for k, g, _ in kinds]),
            "year": np.concatenate([y for _, _, y in kinds]).astype(int),
            "area_m2": shapely.area(geoms),
        },
        geometry=geoms,
        crs=c.crs,
    )
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
    scenes = [
        Scene(k, start + timedelta(days=k * revisit_days), ("sentinel-2b", "sentinel-2a")[k % 2]) for k in range(n)
    ]
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
    return {
        "cover": cover,
        "haze": haze + scenario.haze,
        "cirrus": cirrus,
        "cloud_height_m": rng.uniform(800, 3000),
        "cloud_brightness": rng.uniform(0.45, 0.8),
    }


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
    if land.scenario.misregistration_m > 0:
        # the ground and its terrain shading land off the grid; the sky is drawn on the image as it is
        dx, dy = scene_shift(seed, scene, land.scenario.misregistration_m)
        refl, illum = misregister(refl, dx, dy), misregister(illum, dx, dy)
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
        cut = {
            "side": rng.choice([-1, 1]),
            "angle": math.radians(rng.uniform(8, 16)),
            "offset": rng.uniform(0.2, 0.8) * shape[1] * RESOLUTION_M,
        }
        nodata10 = swath_edge(shape, RESOLUTION_M, cut)
        nodata20 = swath_edge(land.grid20.shape.yx, 2 * RESOLUTION_M, cut)

    refl20 = {BANDS[i].key: _coarsen(refl[i]) for i in (BLUE, GREEN, RED, NIR, *BANDS_20M)}
    # Sen2Cor finds most cloud shadow, not all: about a fifth of it, in patches, stays unflagged
    shadow_seen = smooth_field(rng, land.grid20.shape.yx, 2 * RESOLUTION_M, 2000, beta=3.0) > -0.85
    scl = scl_from_scene(
        refl20, _coarsen(cloud), _coarsen(cirrus), _coarsen(shadow), shadow_seen, _coarsen(illum), nodata20
    )
    dn = {}
    for i, band in enumerate(BANDS):
        a = refl[i] if band.gsd == 10 else refl20[band.key]
        a = a + noise_slice(rng, noise, a.shape)
        dn[band.key] = to_dn(a, scene.offset, nodata10 if band.gsd == 10 else nodata20)
    valid = scl != 0
    cloud_cover = 100.0 * float(np.isin(scl[valid], (8, 9, 10)).mean()) if valid.any() else 100.0
    return RenderedScene(scene, dn, scl, round(cloud_cover, 2), sun)


def scene_shift(seed: int, scene: Scene, sd_m: float) -> tuple[float, float]:
    """How far (east, north; metres) a scene's ground lands off the grid: ``sd_m`` per axis before the
    GRI refinement, GRI_REFINED_SHARE of it after. From the scene's own stream, so scenes stay as they are."""
    sd = sd_m if scene.date < GRI_FROM else sd_m * GRI_REFINED_SHARE
    dx, dy = _rng(seed, "misregistration", scene.orbit, scene.index).normal(0.0, sd, 2)
    return float(dx), float(dy)


def misregister(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``a`` (..., y, x) on the 10 m grid with its content moved ``dx`` m east and ``dy`` m north: bilinear,
    the edge repeated where the shift uncovers it. The same as ``scipy.ndimage.shift(order=1,
    mode="nearest")`` (a test holds it to scipy), from four shifted views of the padded array: scipy's
    general spline path cost a third of each scene's rendering."""
    rows, cols = -dy / RESOLUTION_M, dx / RESOLUTION_M
    kr, kc = math.floor(rows), math.floor(cols)
    fr, fc = np.float32(rows - kr), np.float32(cols - kc)
    pad = max(abs(kr), abs(kc)) + 1
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    ny, nx = a.shape[-2:]

    def view(dr: int, dc: int) -> np.ndarray:  # a[r - dr, c - dc]
        return padded[..., pad - dr : pad - dr + ny, pad - dc : pad - dc + nx]

    return (
        (1 - fr) * ((1 - fc) * view(kr, kc) + fc * view(kr, kc + 1))
        + fr * ((1 - fc) * view(kr + 1, kc) + fc * view(kr + 1, kc + 1))
    ).astype(a.dtype, copy=False)


def noise_slice(rng: np.random.Generator, noise: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sensor noise from a precomputed bank, at a random offset: drawing 4 M normals per scene would cost
    more than the rest of the scene, and offsets keep scenes' noise independent."""
    n = shape[0] * shape[1]
    start = int(rng.integers(0, len(noise) - n))
    return noise[start : start + n].reshape(shape)


# --------------------------------------------------------------------------------------------- writing


def write_cog(path: Path, data: np.ndarray, grid: GeoBox) -> None:
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=grid.crs.to_wkt(),
        transform=grid.affine,
        nodata=0,
        compress="DEFLATE",
    ) as dst:
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
        id=s.id,
        geometry=shapely.geometry.mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=s.datetime,
        properties={
            "platform": s.platform,
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": rendered.cloud_cover,
            "proj:epsg": epsg,
            "proj:code": f"EPSG:{epsg}",
            "mgrs:utm_zone": int(MGRS_TILE[:2]),
            "mgrs:latitude_band": MGRS_TILE[2],
            "mgrs:grid_square": MGRS_TILE[3:],
            "s2:mgrs_tile": MGRS_TILE,
            "s2:processing_baseline": s.baseline,
            "s2:product_type": "S2MSI2A",
            "sat:relative_orbit": s.orbit,
            "sat:orbit_state": "descending",
            "view:sun_elevation": round(rendered.sun[0], 3),
            "view:sun_azimuth": round(rendered.sun[1], 3),
            "simulated": True,
        },
        stac_extensions=STAC_EXTENSIONS,
        collection=S2_COLLECTION,
    )
    for band in (*BANDS, None):
        g = grid if band is not None and band.gsd == 10 else grid20
        common = {"gsd": g.resolution.x, "proj:shape": list(g.shape.yx), "proj:transform": list(g.affine)[:6]}
        if band is None:
            item.add_asset(
                "scl",
                pystac.Asset(
                    "./SCL.tif",
                    title="Scene classification map (SCL)",
                    media_type=COG,
                    roles=["data"],
                    extra_fields={
                        **common,
                        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
                    },
                ),
            )
            continue
        item.add_asset(
            band.key,
            pystac.Asset(
                f"./{band.file}.tif",
                title=f"{band.title} - {band.gsd}m",
                media_type=COG,
                roles=["data", "reflectance"],
                extra_fields={
                    **common,
                    "eo:bands": [
                        {
                            "name": band.key,
                            "description": band.title,
                            "common_name": "rededge" if band.key.startswith("rededge") else band.key,
                            "center_wavelength": band.centre_um,
                            "full_width_half_max": band.fwhm_um,
                        }
                    ],
                    "raster:bands": [
                        {
                            "nodata": 0,
                            "data_type": "uint16",
                            "bits_per_sample": 15,
                            "spatial_resolution": band.gsd,
                            "scale": DN_SCALE,
                            "offset": s.offset,
                        }
                    ],
                },
            ),
        )
    return item


def dem_item(folder: Path, dem: np.ndarray, dem_grid: GeoBox, footprint: shapely.Polygon) -> pystac.Item:
    """The DEM as Copernicus GLO-30 is delivered: float32 metres on a 1 arc-second lon/lat grid."""
    arcsec = 1.0 / 3600.0
    west, south, east, north = footprint.bounds
    west, south = math.floor(west / arcsec) * arcsec, math.floor(south / arcsec) * arcsec
    width, height = math.ceil((east - west) / arcsec), math.ceil((north - south) / arcsec)
    transform = Affine(arcsec, 0, west, 0, -arcsec, south + height * arcsec)
    out = np.zeros((height, width), dtype=np.float32)
    reproject(
        dem,
        out,
        src_transform=dem_grid.affine,
        src_crs=dem_grid.crs.to_wkt(),
        dst_transform=transform,
        dst_crs="EPSG:4326",
        resampling=Resampling.bilinear,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        folder / "DEM.tif",
        "w",
        driver="COG",
        width=width,
        height=height,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=transform,
        compress="DEFLATE",
        predictor=3,
    ) as dst:
        dst.write(out, 1)
    bounds = (west, south, west + width * arcsec, south + height * arcsec)
    item = pystac.Item(
        id="Copernicus_DSM_COG_10_N25_00_E098_00_DEM",
        geometry=shapely.geometry.mapping(shapely.box(*bounds)),
        bbox=list(bounds),
        datetime=datetime(2021, 4, 22, tzinfo=timezone.utc),
        properties={"platform": "tandem-x", "gsd": 30, "proj:epsg": 4326, "proj:code": "EPSG:4326", "simulated": True},
        stac_extensions=STAC_EXTENSIONS[1:3],
        collection=DEM_COLLECTION,
    )
    item.add_asset(
        "data",
        pystac.Asset(
            "./DEM.tif",
            title="Simulated Copernicus DEM GLO-30",
            media_type=COG,
            roles=["data"],
            extra_fields={
                "proj:shape": [height, width],
                "proj:transform": list(transform)[:6],
                "raster:bands": [{"data_type": "float32", "spatial_resolution": 30, "unit": "metre"}],
            },
        ),
    )
    return item


def build_catalog(
    name: str,
    params: dict,
    items: list[pystac.Item],
    dem: pystac.Item,
    start: date,
    end: date,
    footprint: shapely.Polygon,
) -> pystac.Catalog:
    catalog = pystac.Catalog(
        id=name,
        description=f"SIMULATED Sentinel-2 L2A scenes and DEM ({name}), "
        "laid out like Earth Search v1; ground truth in truth.gpkg",
        extra_fields={"simulation": json.dumps(params, sort_keys=True)},
    )
    s2 = pystac.Collection(
        S2_COLLECTION,
        "Simulated Sentinel-2 L2A",
        pystac.Extent(
            pystac.SpatialExtent([list(footprint.bounds)]),
            pystac.TemporalExtent(
                [
                    [
                        datetime(start.year, 1, 1, tzinfo=timezone.utc),
                        datetime(end.year, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
                    ]
                ]
            ),
        ),
        license="proprietary",
    )
    cop = pystac.Collection(
        DEM_COLLECTION,
        "Simulated Copernicus DEM GLO-30",
        pystac.Extent(pystac.SpatialExtent([dem.bbox]), pystac.TemporalExtent([[dem.datetime, dem.datetime]])),
        license="proprietary",
    )
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


def simulate(
    out: str | Path,
    seed: int = 0,
    *,
    size_km: float = 6.0,
    start_year: int = 2020,
    end_year: int = 2024,
    revisit_days: int = 10,
    progress: Callable[[int, int], None] | None = None,
    reuse: bool = False,
    scenario: Scenario | str = "standard",
) -> SimulatedAOI:
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
    crs = utm_crs(
        *Transformer.from_crs(pools.crs, 4326, always_xy=True).transform(
            (window[0] + window[2]) / 2, (window[1] + window[3]) / 2
        )
    )
    params = {
        "seed": seed,
        "size_km": size_m / 1000.0,
        "start_year": start_year,
        "end_year": end_year,
        "revisit_days": revisit_days,
        "window": list(window),
        "crs": f"EPSG:{crs.to_epsg()}",
        "version": SIMULATOR_VERSION,
        **({"scenario": scenario.changed()} if scenario.changed() else {}),
    }
    _check_out(out, params)
    if reuse and _previous_parameters(out) == params and (out / "truth.gpkg").is_file():
        log.info("reusing the simulated AOI in %s (same parameters)", out)
        return SimulatedAOI(out / "catalog.json", out / "truth.gpkg", out / "aoi.geojson", start, end)
    name = f"simulated-seed{seed}" + ("-" + "-".join(sorted(scenario.changed())) if scenario.changed() else "")
    land, truth, dem_padded, dem_grid = build_landscape(seed, window, crs, start, end, pools.to_crs(crs), scenario)
    log.info(
        "landscape of %s ready in %.1f s: %d ponds, %d sites",
        name,
        time.perf_counter() - started,
        len(truth.ponds),
        len(truth.sites),
    )

    out.mkdir(parents=True, exist_ok=True)
    partial_dir = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        scenes = scene_schedule(start, end, revisit_days, scenario.second_orbit)
        footprint = _footprint(land.grid.boundingbox, crs)
        footprints = {RELATIVE_ORBIT: footprint, SECOND_ORBIT: _footprint(second_orbit_footprint(land.grid), crs)}
        noise = _rng(seed, "noise").standard_normal(1 << 22, dtype=np.float32) * PIXEL_NOISE
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
        dem = dem_item(
            partial_dir / DEM_COLLECTION / "Copernicus_DSM_COG_10_N25_00_E098_00_DEM", dem_padded, dem_grid, footprint
        )
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
            raise OutputError(
                f"disk full writing the simulated AOI to {out}: free disk space (or simulate onto a "
                "larger disk) and run again; nothing was left half-written"
            ) from None
        raise
    log.info("simulated %s: %d scenes in %.1f s -> %s", name, len(scenes), time.perf_counter() - started, out)
    return SimulatedAOI(out / "catalog.json", out / "truth.gpkg", out / "aoi.geojson", start, end)
