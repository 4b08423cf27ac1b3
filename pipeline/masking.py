"""Valid-pixel masks from the Sentinel-2 scene classification (SCL)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

# SCL classes that come from clouds: they get a buffer, because SCL misses their thin edges.
# Nodata and saturation have sharp edges and are masked as they are.
CLOUD_CLASSES = (3, 8, 9, 10)


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow True areas of a (time, y, x) mask by ``px`` pixels in y and x, never across time."""
    return ndimage.maximum_filter(mask.view(np.uint8), size=(1, 2 * px + 1, 2 * px + 1)).astype(bool)


def grow_mask(mask: xr.DataArray, px: int) -> xr.DataArray:
    if px <= 0:
        return mask
    data = mask.data
    if isinstance(data, da.Array):
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
