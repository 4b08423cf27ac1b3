"""The UTM zone an AOI is measured in."""

from __future__ import annotations

import pytest

from pipeline.aoi import utm_crs


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [
        (98.37, 25.72, 32647),  # Pang War, Kachin
        (-70.65, -33.45, 32719),  # Santiago: southern hemisphere
        (102.0, 10.0, 32648),  # on the 47/48 edge: the zone east of it
        (101.999, 10.0, 32647),
        (96.0, -0.001, 32747),  # just south of the equator, on the 46/47 edge
        (96.0, 0.0, 32647),  # on the equator: north
        (-180.0, 5.0, 32601),
        (179.999, 5.0, 32660),
    ],
)
def test_utm_zone_of_a_point(lon, lat, epsg):
    assert utm_crs(lon, lat).to_epsg() == epsg
