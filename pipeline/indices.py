"""Spectral indices of surface reflectance. Pure functions on DataArrays, float32 out."""
from __future__ import annotations

import numpy as np
import xarray as xr


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """(a - b) / (a + b); NaN where the sum is zero (no signal) or either input is NaN."""
    total = a + b
    return ((a - b) / total.where(total != 0)).astype(np.float32)


def ndvi(red, nir):
    """Vegetation: high for forest and crops, near zero or negative for soil and water."""
    return normalized_difference(nir, red).rename("ndvi")


def ndwi(green, nir):
    """McFeeters' water index (green vs NIR)."""
    return normalized_difference(green, nir).rename("ndwi")


def mndwi(green, swir16):
    """Xu's modified NDWI (green vs SWIR 1.6 um): separates water from bare soil and built-up land,
    which NDWI confuses; milky, clay-laden leachate ponds stay strongly positive."""
    return normalized_difference(green, swir16).rename("mndwi")


def bsi(blue, red, nir, swir16):
    """Bare soil index: ((SWIR1 + red) - (NIR + blue)) / ((SWIR1 + red) + (NIR + blue))."""
    return normalized_difference(swir16 + red, nir + blue).rename("bsi")


def all_indices(scene: xr.Dataset) -> xr.Dataset:
    """The indices the classifiers use, from a reflectance dataset with Earth Search band names."""
    return xr.Dataset({
        "ndvi": ndvi(scene["red"], scene["nir"]),
        "mndwi": mndwi(scene["green"], scene["swir16"]),
        "bsi": bsi(scene["blue"], scene["red"], scene["nir"], scene["swir16"]),
    })


BANDS = ["blue", "green", "red", "nir", "swir16"]  # what all_indices reads
