"""Valid-pixel masks from the Sentinel-2 scene classification (SCL), and an optional spectral haze screen."""
from __future__ import annotations

import numpy as np
import xarray as xr

# SCL classes that come from clouds: they get a buffer, because SCL misses their thin edges.
# Nodata and saturation have sharp edges and are masked as they are.
CLOUD_CLASSES = (3, 8, 9, 10)


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow True areas of a (time, y, x) mask by ``px`` pixels in y and x, never across time."""
    from scipy import ndimage  # here: a run counts with its own kernel, and scipy.ndimage takes 0.2 s to import

    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, 2 * px + 1, 2 * px + 1)).astype(bool)


def grow_mask(mask: xr.DataArray, px: int) -> xr.DataArray:
    if px <= 0:
        return mask
    data = mask.data
    if mask.chunks is not None:  # dask-backed
        grown = data.map_overlap(_grow, depth={0: 0, 1: px, 2: px}, boundary="none", px=px, dtype=bool)
    else:
        grown = _grow(np.asarray(data), px)
    return mask.copy(data=grown)


def scl_mask(scl: xr.DataArray, invalid_classes: list[int], buffer_px: int) -> xr.DataArray:
    """True where a pixel is a clear view of the ground.

    Pixels of ``invalid_classes`` are excluded; the cloud-born ones among them (shadow, cloud,
    cirrus) are grown by ``buffer_px`` pixels first.
    """
    cloudy_classes = [c for c in invalid_classes if c in CLOUD_CLASSES]
    other = [c for c in invalid_classes if c not in CLOUD_CLASSES]
    cloudy = grow_mask(scl.isin(cloudy_classes), buffer_px)
    return (~(cloudy | scl.isin(other))).rename("valid")


def clear_mask(scene: xr.Dataset, invalid_classes: list[int], buffer_px: int, bands: list[str]) -> xr.DataArray:
    """``scl_mask`` and a reflectance in every band used (nodata and swath edges are NaN)."""
    valid = scl_mask(scene["scl"], invalid_classes, buffer_px)
    for b in bands:
        valid = valid & scene[b].notnull()
    return valid


# The clear-sky line of the haze-optimised transform (Zhang, Guindon & Cihlar 2002, Remote Sens.
# Environ. 82: 173-187), with the slope and offset Fmask uses on top-of-atmosphere reflectance
# (Zhu & Woodcock 2012, Remote Sens. Environ. 118: 83-94, eq. 5): on clear land blue and red rise
# together along it; haze and thin cloud scatter blue far more than red and lift a pixel above it.
HOT_SLOPE = 0.5
HOT_OFFSET = 0.08


def hot(blue, red):
    """Haze-optimised transform ``blue - 0.5 red - 0.08``: about 0 or below on clear land, above 0 in
    haze and cloud. Works on numpy arrays and DataArrays alike (float32 in, float32 out)."""
    return blue - HOT_SLOPE * red - HOT_OFFSET


def haze_mask(blue, red, hot_max: float | None = None, blue_max: float | None = None):
    """True where a pixel looks like haze or cloud: HOT above ``hot_max`` or blue reflectance above
    ``blue_max``; a test whose threshold is None is off (with both off, nothing is flagged).

    Pure spectral and per pixel, so it needs no SCL. NaN (no data) is never flagged: the clear-view
    mask removes it anyway. Bright surfaces (white plastic over a pond, fresh concrete) are flagged too.
    """
    flagged = xr.zeros_like(blue, dtype=bool) if isinstance(blue, xr.DataArray) else np.zeros(np.shape(blue), bool)
    if hot_max is not None:
        flagged = flagged | (hot(blue, red) > hot_max)
    if blue_max is not None:
        flagged = flagged | (blue > blue_max)
    if isinstance(flagged, xr.DataArray):
        flagged = flagged.rename("haze")
    return flagged
