"""Rule-based classifiers: per clear observation (pixel level) and per feature (object level).

Every threshold comes from the config, where each is explained.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import shapely
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.spatial.distance import pdist
from skimage.morphology import skeletonize

from pipeline.rules import ClearingRules, PondRules
from pipeline.vectorize import link_sites


def select_clearings(clearings: gpd.GeoDataFrame, rules: ClearingRules, months=None) -> gpd.GeoDataFrame:
    """Bare patches that are large enough, stay bare and never green while active; each gets
    ``persistent``: whether it may make a site on its own, without a pond near it, and ``provisional``:
    whether it may do so only because the record (``months``, a DatetimeIndex of month starts; clearings
    carry median ``onset_month`` / ``last_month`` indices into it) ends before it could stay bare long
    enough to be ``persistent``, and it did not start when swiddens are cut unless it outlasted their rice.
    Both flags need a clearing on a hillside, not strip-shaped (unless bare for ``strip_min_months``), that
    reads as laterite (``bsi_mean``, where the table has it). Where the slope is unknown (no DEM) the slope
    rule cannot be applied and is skipped."""
    # the size rule is on the pixels that were bare, before edges were grown: grown edges are no
    # evidence of a clearing, only of its outline
    core = clearings["core_area_m2"] if "core_area_m2" in clearings else clearings["area_m2"]
    keep = core >= rules.min_area_m2
    keep &= (clearings["bare_share"] >= rules.min_bare_share) & (clearings["green_share"] <= rules.max_green_share)
    out = clearings[keep].copy()
    slope = out["mean_slope_deg"]
    road = out["road"].to_numpy(dtype=bool) if "road" in out else np.zeros(len(out), bool)
    strip_ok = (out["elongation"] <= rules.alone_max_elongation) | (out["months_seen"] >= rules.strip_min_months)
    hillside = (slope.isna() | (slope >= rules.alone_min_slope_deg)).to_numpy()
    # laterite, not a scar's grey debris under returning shrub nor a river's gravel
    laterite = (
        (out["bsi_mean"].isna() | (out["bsi_mean"] >= rules.alone_min_bsi)).to_numpy()
        if "bsi_mean" in out
        else np.ones(len(out), bool)
    )
    # ground leach ponds are dug beside: a hillside or a levelled laterite terrace; not a road cut, nor
    # the grey gravel of a river bar or an alluvial gold working on the valley floor
    out["pond_ground"] = ~road & (hillside | laterite)
    shape_ok = strip_ok & ~road & hillside & laterite
    out["persistent"] = (out["months_seen"] >= rules.alone_min_months) & shape_ok
    if months is None or rules.provisional_recent_months == 0 or "onset_month" not in out or out.empty:
        out["provisional"] = False
        return out
    n = len(months)
    # still bare at the end of the record, so its months_seen is cut short by the record, not by regrowth
    # (months_seen runs from the bare onset to the last bare month: short and ending now = started late)
    recent = out["last_month"] >= n - rules.provisional_recent_months
    at = lambda col: months[np.clip(np.floor(out[col].to_numpy(dtype=float)).astype(int), 0, n - 1)]  # noqa: E731
    onset, last = at("onset_month"), at("last_month")
    swidden_season = np.isin(onset.month, rules.swidden_start_months)
    outlasted_rice = (last.year > onset.year) | (last.month >= rules.provisional_bare_until_month)
    out["provisional"] = ~out["persistent"] & shape_ok & recent & (~swidden_season | outlasted_rice)
    return out


def select_ponds(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, rules: PondRules) -> gpd.GeoDataFrame:
    """Water bodies of pond size, confirmed in more than one month and not part of a river or stream
    (``river``, where the table has it), that lie next to a clearing where leach ponds are dug (clearings
    flagged ``pond_ground``, where the table has it) or have held water for ``alone_min_months`` on sloping
    ground (``setting_slope_deg``, where the table has it and the DEM was known) and do not line up with
    other such lone water into a chain a river would make (``chain_gap_m``, ``network_min_length_m``)."""
    keep = (ponds["area_m2"] >= rules.min_area_m2) & (ponds["area_m2"] <= rules.max_area_m2)
    keep &= ponds["months_seen"] >= rules.min_months_seen
    if "river" in ponds:
        keep &= ~ponds["river"].astype(bool)
    ponds = ponds[keep]
    lasting = ponds["months_seen"].to_numpy() >= rules.alone_min_months
    if "setting_slope_deg" in ponds:
        setting = ponds["setting_slope_deg"].to_numpy(dtype=float)
        lasting &= np.isnan(setting) | (setting >= rules.alone_min_slope_deg)
    if "pond_ground" in clearings:
        clearings = clearings[clearings["pond_ground"].astype(bool)]
    beside = np.zeros(len(ponds), bool)
    if len(ponds) and len(clearings):
        beside[
            clearings.sindex.query(
                ponds.geometry.values, predicate="dwithin", distance=rules.max_distance_to_clearing_m
            )[0]
        ] = True
    lone = lasting & ~beside
    lone[lone] = ~in_long_chains(ponds.geometry[lone], rules.chain_gap_m, rules.network_min_length_m)
    return ponds[beside | lone]


def in_long_chains(geoms: gpd.GeoSeries, gap_m: float, min_length_m: float) -> np.ndarray:
    """Whether each geometry belongs to a chain (single linkage at ``gap_m``) whose smallest enclosing
    circle is at least ``min_length_m`` across: the pieces of a river too broken for the network rule
    line up along it; lone leach ponds do not (the mapped pools, linked at 100 m, span under 300 m)."""
    if len(geoms) == 0:
        return np.zeros(0, bool)
    chain = link_sites(geoms, gap_m)
    across = {
        c: 2 * shapely.minimum_bounding_radius(shapely.union_all(geoms.values[chain == c])) for c in np.unique(chain)
    }
    return np.array([across[c] >= min_length_m for c in chain])


def water_network(water: np.ndarray, resolution_m: float, min_length_m: float, gap_m: float) -> np.ndarray:
    """The pixels of ``water`` that belong to a river or stream: pieces no more than ``gap_m`` apart
    joined (a river breaks into pieces where its mixed pixels fall short of the water rule), and kept
    where the joined piece's greatest extent (maximum Feret diameter) reaches ``min_length_m``.

    Running water is long and connected; a cluster of leaching ponds is compact: the 2,497 mapped Pang
    War pools, joined at gaps of up to 100 m, span at most 267 m (``docs/methods.md``).
    """
    water = np.asarray(water, dtype=bool)
    eight = np.ones((3, 3), bool)
    steps = math.ceil(gap_m / (2 * resolution_m))
    joined = ndimage.binary_dilation(water, structure=eight, iterations=steps) if steps else water
    labels, _ = ndimage.label(joined, structure=eight)
    labels[~water] = 0
    out = np.zeros(water.shape, bool)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # the box's diagonal bounds the extent: most pieces are measured by it alone
        if resolution_m * math.hypot(box[0].stop - box[0].start, box[1].stop - box[1].start) < min_length_m:
            continue
        piece = labels[box] == i
        if resolution_m * feret_diameter(piece) >= min_length_m:
            out[box] |= piece
    return out


def feret_diameter(mask: np.ndarray) -> float:
    """Greatest extent (pixels) of the pixels of ``mask``, taken as squares: the largest distance between
    corners of its outline's pixels, over the vertices of their convex hull."""
    edge = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(edge)
    corners = np.unique(np.concatenate([np.c_[rows + dr, cols + dc] for dr in (0, 1) for dc in (0, 1)]), axis=0)
    try:
        corners = corners[ConvexHull(corners).vertices]
    except QhullError:  # all on one line: every corner is a candidate
        pass
    return float(pdist(corners).max()) if len(corners) > 1 else 0.0


def strip_width_m(labels: np.ndarray, resolution_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean width and length (m) of each labelled feature (index = label): its area over the length of its
    skeleton. A road cut is a few pixels wide however it winds; the minimum rotated rectangle of a road
    with hairpin bends is nearly square."""
    labels = np.asarray(labels)
    n = int(labels.max()) + 1
    # holes filled first: ponds inside a clearing would make its skeleton ring each of them
    filled = ndimage.binary_fill_holes(labels > 0)
    holes, n_holes = ndimage.label(filled & (labels == 0))
    if n_holes:  # each hole takes the label of the feature around it: the pixel above its first pixel
        _, first = np.unique(holes.ravel(), return_index=True)
        rows, cols = np.unravel_index(first[1:], holes.shape)
        labels = np.where(holes > 0, np.append(0, labels[rows - 1, cols])[holes], labels)
    area = np.bincount(labels[filled], minlength=n).astype(float)
    skeleton = skeletonize(filled)
    length = np.maximum(np.bincount(labels[skeleton], minlength=n).astype(float), 1.0) * resolution_m
    return area * resolution_m**2 / length, length


def surrounding_slope(slope: np.ndarray, resolution_m: float, radius_m: float) -> np.ndarray:
    """Mean slope (degrees) within ``radius_m`` of each pixel: the ground a pond was dug into. A pond's own
    surface is flat; the hillside at whose foot a leach pond lies is not, a valley floor of fish ponds,
    paddies and river bars is. NaN (no DEM) stays NaN."""
    size = 2 * max(int(round(radius_m / resolution_m)), 1) + 1
    return ndimage.uniform_filter(np.asarray(slope, dtype=np.float32), size=size, mode="nearest")


def floodplain(
    river: np.ndarray,
    setting_slope: np.ndarray,
    resolution_m: float,
    distance_m: float,
    max_slope_deg: float,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Flat ground (``setting_slope`` under ``max_slope_deg``) within ``distance_m`` of a river's water: where
    its side channels, bar pools and oxbows lie, which the network rule sees as pieces apart from it. Only
    the pixels of ``where`` (default: all) are judged: the water pixels are all that need it."""
    out = np.zeros(river.shape, bool)
    candidates = np.asarray(setting_slope) < max_slope_deg
    if where is not None:
        candidates &= where
    if not river.any() or not candidates.any():
        return out
    points = np.argwhere(candidates)
    distance, _ = cKDTree(np.argwhere(river)).query(points, distance_upper_bound=distance_m / resolution_m + 1e-6)
    near = points[distance * resolution_m <= distance_m]
    out[near[:, 0], near[:, 1]] = True
    return out


def road_cuts(labels: np.ndarray, resolution_m: float, rules: ClearingRules) -> np.ndarray:
    """Per label (index = label) of a bare-ground label raster: whether it is a road cut, a strip at most
    ``road_max_width_m`` wide that runs at least ``road_min_length_m``."""
    width, length = strip_width_m(labels, resolution_m)
    return (width <= rules.road_max_width_m) & (length >= rules.road_min_length_m)


def pond_settings(water: dict, slope: np.ndarray | None, resolution_m: float, rules: PondRules) -> dict:
    """Where each water pixel lies, as (y, x) rasters for ``select_ponds``: ``river`` (1 on a river or stream
    network or, with a DEM, its floodplain) and, with a DEM, ``setting_slope_deg``. ``water``: the onset
    stage's pond maps (``onset``, ``water_share_all``)."""
    seen = (water["onset"] >= 0) | (water["water_share_all"] >= rules.network_min_water_share)
    river = water_network(seen, resolution_m, rules.network_min_length_m, rules.network_gap_m)
    if slope is None:
        return {"river": river.astype(np.float32)}
    setting = surrounding_slope(slope, resolution_m, rules.setting_radius_m)
    river |= floodplain(river, setting, resolution_m, rules.floodplain_m, rules.alone_min_slope_deg, where=seen)
    return {"river": river.astype(np.float32), "setting_slope_deg": setting}
