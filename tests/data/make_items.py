"""Writes the recorded-style item fixtures of this folder (run: python tests/data/make_items.py).

They follow the shape of real responses (properties, asset keys, raster:bands) of
- Earth Search v1 ``sentinel-2-l2a``: ids ``S2B_47RQL_20230105_0_L2A``; a granule reprocessed under a
  newer baseline is a second item ``..._1_L2A`` with the same datetime; the orbit only in
  ``s2:product_uri`` (``_R004_``); assets blue..swir22/scl with ``raster:bands`` scale 0.0001 offset -0.1;
- Planetary Computer ``sentinel-2-l2a``: ids ``S2B_MSIL2A_20230105T040119_R004_T47RQL_20230105T071202``,
  ``sat:relative_orbit``, ``s2:mgrs_tile``, assets B02..B12/SCL without an offset.
Geometry and hrefs are trimmed to what the pipeline reads.
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
TILE_47RQL = [[98.05, 25.30], [99.15, 25.30], [99.15, 26.30], [98.05, 26.30], [98.05, 25.30]]
TILE_47RQM = [[98.05, 26.20], [99.15, 26.20], [99.15, 27.20], [98.05, 27.20], [98.05, 26.20]]
ES_BANDS = {
    "blue": ("B02", 10),
    "green": ("B03", 10),
    "red": ("B04", 10),
    "rededge1": ("B05", 20),
    "rededge2": ("B06", 20),
    "rededge3": ("B07", 20),
    "nir": ("B08", 10),
    "nir08": ("B8A", 20),
    "swir16": ("B11", 20),
    "swir22": ("B12", 20),
}


def es_item(tile, seq, baseline, ring, dt="2023-01-05T04:13:59.012000Z", orbit="R004"):
    tid = f"S2B_{tile}_20230105_{seq}_L2A"
    base = f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/{tile[:2]}/{tile[2]}/{tile[3:]}/2023/1/{tid}"
    assets = {
        k: {
            "href": f"{base}/{b}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": f"{k} - {g}m",
            "roles": ["data", "reflectance"],
            "gsd": g,
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": g,
                    "scale": 0.0001,
                    "offset": -0.1 if baseline >= "04.00" else 0,
                }
            ],
        }
        for k, (b, g) in ES_BANDS.items()
    }
    assets["scl"] = {
        "href": f"{base}/SCL.tif",
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": tid,
        "collection": "sentinel-2-l2a",
        "bbox": [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "created": "2023-01-05T09:12:44.000Z",
            "platform": "sentinel-2b",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": 12.5,
            "proj:epsg": 32647,
            "mgrs:utm_zone": 47,
            "mgrs:latitude_band": tile[2],
            "mgrs:grid_square": tile[3:],
            "grid:code": f"MGRS-{tile}",
            "s2:processing_baseline": baseline,
            "s2:product_type": "S2MSI2A",
            "s2:product_uri": (
                f"S2B_MSIL2A_20230105T040119_N{baseline.replace('.', '')}_{orbit}_T{tile}_20230105T071202.SAFE"
            ),
            "s2:datatake_id": "GS2B_20230105T040119_030452_N" + baseline,
            "earthsearch:boa_offset_applied": baseline >= "04.00",
            "datetime": dt,
            "updated": f"2023-0{1 + seq}-06T00:00:00.000Z",
        },
        "links": [],
        "assets": assets,
        "stac_extensions": [
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        ],
    }


def pc_item():
    tid = "S2B_MSIL2A_20230105T040119_R004_T47RQL_20230105T071202"
    base = (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/47/R/QL/2023/01/05/" + tid + ".SAFE/GRANULE/IMG_DATA"
    )
    assets = {
        b: {
            "href": f"{base}/R{g}m/T47RQL_20230105T040119_{b}_{g}m.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "gsd": g,
            "eo:bands": [{"name": b, "common_name": k}],
        }
        for k, (b, g) in ES_BANDS.items()
    }
    assets["SCL"] = {"href": f"{base}/R20m/T47RQL_20230105T040119_SCL_20m.tif", "roles": ["data"], "gsd": 20}
    assets["visual"] = {"href": f"{base}/R10m/T47RQL_20230105T040119_TCI_10m.tif", "roles": ["data"]}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": tid,
        "collection": "sentinel-2-l2a",
        "bbox": [98.05, 25.3, 99.15, 26.3],
        "geometry": {"type": "Polygon", "coordinates": [TILE_47RQL]},
        "properties": {
            "datetime": "2023-01-05T04:13:59.024000Z",
            "platform": "Sentinel-2B",
            "proj:epsg": 32647,
            "eo:cloud_cover": 12.5,
            "s2:mgrs_tile": "47RQL",
            "sat:relative_orbit": 4,
            "sat:orbit_state": "descending",
            "s2:processing_baseline": "05.09",
            "s2:product_type": "S2MSI2A",
            "s2:datatake_id": "GS2B_20230105T040119_030452_N05.09",
        },
        "links": [],
        "assets": assets,
    }


if __name__ == "__main__":
    items = [
        es_item("47RQL", 0, "04.00", TILE_47RQL),
        es_item("47RQL", 1, "05.09", TILE_47RQL),
        es_item("47RQM", 0, "05.09", TILE_47RQM, dt="2023-01-05T04:13:45.113000Z"),
    ]
    (HERE / "earth_search_items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items}, indent=1) + "\n"
    )
    (HERE / "planetary_computer_item.json").write_text(json.dumps(pc_item(), indent=1) + "\n")
