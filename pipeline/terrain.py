"""Slope from a DEM on the analysis grid."""
from __future__ import annotations

import numpy as np
import xarray as xr


def slope_deg(dem: xr.DataArray, resolution_m: float) -> xr.DataArray:
    """Slope in degrees from elevations in metres on a square grid of ``resolution_m``.

    Central differences (numpy.gradient), one-sided at the edges; NaN elevations give NaN slope.
    """
    z = np.asarray(dem.values, dtype=np.float64)
    dz_dy, dz_dx = np.gradient(z, resolution_m)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype(np.float32)
    return dem.copy(data=slope).rename("slope_deg")
