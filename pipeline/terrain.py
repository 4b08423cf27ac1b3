"""Slope from a DEM on the analysis grid."""

from __future__ import annotations

import numpy as np


def slope_degrees(elevation: np.ndarray, resolution_m: float) -> np.ndarray:
    """Slope in degrees (float32) from elevations in metres on a square grid of ``resolution_m``.

    Central differences (numpy.gradient), one-sided at the edges; NaN elevations give NaN slope.
    """
    dz_dy, dz_dx = np.gradient(np.asarray(elevation, dtype=np.float64), resolution_m)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype(np.float32)
