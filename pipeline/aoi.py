"""Areas of interest: loading, validation, and the one analysis grid built from them.

The grid is an odc-geo ``GeoBox``: CRS, transform and shape travel together, so no stage ever
handles a bare bbox or transform. It is the AOI's UTM zone at 10 m, snapped outward to multiples
of 20 m so that Sentinel-2's 10 m and 20 m pixels (whose tile origins are multiples of 20 m)
fall exactly on it, without resampling shifts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import utm
from odc.geo.crs import CRS as OdcCRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox
from pyproj import CRS

from pipeline.config import RunConfig
from pipeline.errors import AOIError

SNAP_M = 20.0


@dataclass(frozen=True)
class AOI:
    name: str
    geometry: shapely.Polygon | shapely.MultiPolygon  # WGS84 lon/lat
    crs: CRS  # the AOI's UTM zone
    grid: GeoBox
    properties: dict

    @property
    def geometry_utm(self):
        return gpd.GeoSeries([self.geometry], crs=4326).to_crs(self.crs).iloc[0]

    @property
    def area_km2(self) -> float:
        return float(area_m2(gpd.GeoSeries([self.geometry_utm], crs=self.crs)).iloc[0]) / 1e6


def utm_epsg(lon: float, lat: float) -> int:
    """The EPSG code of the WGS84 UTM zone holding a point (Kachin State is zone 47N, EPSG:32647). A
    point on a zone edge belongs to the zone east of it, one on the equator to the north; the zones
    widened over Norway and Svalbard are those of Sentinel-2's own MGRS tiles there. ``utm`` is the
    package sentinelhub-py asks for the same answer."""
    return (32600 if lat >= 0 else 32700) + utm.latlon_to_zone_number(lat, lon)


def utm_crs(lon: float, lat: float) -> CRS:
    """The CRS of :func:`utm_epsg`'s zone."""
    return CRS.from_epsg(utm_epsg(lon, lat))


def grid_crs(grid: GeoBox) -> OdcCRS:
    """A grid's CRS: every grid here has one (``snapped_grid``); odc-geo allows none."""
    if grid.crs is None:
        raise ValueError("a grid without a CRS: make it with snapped_grid")
    return grid.crs


def snapped_grid(bounds: tuple[float, float, float, float], crs: CRS, resolution: float) -> GeoBox:
    """A north-up grid covering ``bounds`` (in ``crs``), edges snapped outward to the 20 m lattice."""
    left, bottom, right, top = bounds
    snap = max(SNAP_M, resolution)
    left, bottom = math.floor(left / snap) * snap, math.floor(bottom / snap) * snap
    right, top = math.ceil(right / snap) * snap, math.ceil(top / snap) * snap
    return GeoBox.from_bbox(BoundingBox(left, bottom, right, top, crs), crs=crs, resolution=resolution)


def area_m2(geoms: gpd.GeoSeries | gpd.GeoDataFrame) -> pd.Series:
    """Planar area in square metres. The one place areas are computed: geometries must be in a
    projected CRS (the AOI's UTM zone), never degrees."""
    crs = geoms.crs
    if crs is None or not crs.is_projected:
        raise ValueError(f"area_m2 needs geometries in a projected CRS (the AOI's UTM zone), got {crs}")
    return geoms.geometry.area if isinstance(geoms, gpd.GeoDataFrame) else geoms.area


def _read_geojson(path: Path) -> gpd.GeoDataFrame:
    if not path.is_file():
        raise AOIError(f"AOI file {path} does not exist: pass an existing GeoJSON polygon (see aois/)")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AOIError(
            f"AOI file {path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}): "
            "save it as GeoJSON (FeatureCollection of one Polygon in lon/lat)"
        ) from None
    if not isinstance(doc, dict) or doc.get("type") not in {"FeatureCollection", "Feature", "Polygon", "MultiPolygon"}:
        raise AOIError(
            f"AOI file {path} is not GeoJSON (no FeatureCollection/Feature/Polygon 'type'): "
            "save it as a GeoJSON FeatureCollection of one Polygon in lon/lat"
        )
    if doc["type"] in {"Polygon", "MultiPolygon"}:
        doc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": doc}]}
    elif doc["type"] == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    declared = ((doc.get("crs") or {}).get("properties") or {}).get("name", "")
    if declared and not any(k in declared.upper() for k in ("CRS84", "4326")):
        raise AOIError(
            f"AOI file {path} declares CRS {declared}: GeoJSON AOIs must be WGS84 lon/lat; "
            "reproject it to EPSG:4326 (QGIS: Export > Save Features As, CRS EPSG:4326)"
        )
    features = doc.get("features") or []
    if not features:
        raise AOIError(f"AOI file {path} has no features: draw one Polygon around the area to watch")
    try:
        gdf = gpd.GeoDataFrame.from_features(features, crs=4326)
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise AOIError(f"AOI file {path} has a geometry that cannot be read ({e}): fix its coordinates") from None
    gdf.attrs["properties"] = features[0].get("properties") or {}
    return gdf


def lonlat_fault(bounds) -> str | None:
    """What is wrong with ``(lon0, lat0, lon1, lat1)`` bounds of a file meant to be WGS84 degrees:
    "swapped" (latitude and longitude exchanged), "outside" (not degrees: a projected CRS), or None."""
    lon0, lat0, lon1, lat1 = bounds
    if -90 <= lon0 <= lon1 <= 90 and not (-90 <= lat0 <= lat1 <= 90) and -180 <= lat0 <= lat1 <= 180:
        return "swapped"
    if not (-180 <= lon0 <= lon1 <= 180 and -90 <= lat0 <= lat1 <= 90):
        return "outside"
    return None


def load_aoi(path: str | Path, resolution: float = RunConfig.model_fields["resolution"].default) -> AOI:
    """Read and check an AOI GeoJSON (lon/lat WGS84) and build its UTM analysis grid (default: the run's)."""
    path = Path(path)
    gdf = _read_geojson(path)
    geoms = gdf.geometry
    if geoms.isna().any() or geoms.is_empty.any():
        raise AOIError(f"AOI file {path} has an empty geometry: draw one Polygon around the area to watch")
    kinds = set(geoms.geom_type)
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise AOIError(
            f"AOI file {path} holds {', '.join(sorted(kinds))}, not a Polygon: "
            "an AOI must be an area (Polygon or MultiPolygon)"
        )
    lon0, lat0, lon1, lat1 = geoms.total_bounds
    fault = lonlat_fault(geoms.total_bounds)
    if fault == "swapped":
        raise AOIError(
            f"AOI file {path} has latitudes up to {max(abs(lat0), abs(lat1)):.1f}: latitude and "
            "longitude look swapped; GeoJSON puts longitude first ([lon, lat])"
        )
    if fault == "outside":
        raise AOIError(
            f"AOI file {path} has coordinates outside lon/lat ranges ({lon0:.1f}..{lon1:.1f}, "
            f"{lat0:.1f}..{lat1:.1f}): GeoJSON must be in WGS84 degrees, longitude first"
        )
    invalid = ~geoms.is_valid
    if invalid.any():
        why = shapely.is_valid_reason(geoms[invalid].iloc[0])
        raise AOIError(
            f"AOI file {path} has an invalid polygon ({why}): fix it (QGIS: Processing > Fix "
            "geometries) or redraw it without crossing edges"
        )
    geom = shapely.union_all(np.asarray(geoms.values))
    if geom.area == 0:
        raise AOIError(f"AOI file {path} encloses no area: draw one Polygon around the area to watch")
    parts = len(getattr(geom, "geoms", [geom]))
    if parts > 1:
        raise AOIError(
            f"AOI file {path} holds {parts} separate polygons: the grid would cover the gaps "
            "between them; give each area its own AOI file"
        )
    zones = {utm_epsg(x, (lat0 + lat1) / 2) for x in (lon0, lon1)}
    if len(zones) > 1:
        edge = (math.floor((lon1 + 180.0) / 6.0)) * 6.0 - 180.0
        raise AOIError(
            f"AOI file {path} spans UTM zones {sorted(z % 100 for z in zones)} (lon {lon0:.2f}..{lon1:.2f}): "
            f"split it at {edge:g} E into one AOI per zone, so areas are measured in each zone's own CRS"
        )
    c = geom.centroid
    crs = utm_crs(c.x, c.y)
    grid = snapped_grid(gpd.GeoSeries([geom], crs=4326).to_crs(crs).total_bounds, crs, resolution)
    props = gdf.attrs["properties"]
    return AOI(name=str(props.get("name") or path.stem), geometry=geom, crs=crs, grid=grid, properties=props)


def aoi_mask(aoi: AOI) -> np.ndarray:
    """Boolean (y, x) raster of the grid pixels whose centres lie inside the AOI polygon."""
    from rasterio.features import geometry_mask

    gb = aoi.grid
    return geometry_mask([aoi.geometry_utm], out_shape=gb.shape.yx, transform=gb.affine, invert=True)


def write_aoi(path: str | Path, geometry_wgs84, name: str, **properties) -> Path:
    """Write a one-feature GeoJSON AOI (lon/lat), as the files in aois/ are written."""
    path = Path(path)
    feature = {
        "type": "Feature",
        "properties": {"name": name, **properties},
        "geometry": shapely.geometry.mapping(geometry_wgs84),
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}, indent=1))
    return path
