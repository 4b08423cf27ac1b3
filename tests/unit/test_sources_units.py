"""Item handling of the online sources on recorded-style items (tests/data, made by make_items.py)."""

from __future__ import annotations

import json

import pystac
import shapely

from pipeline.config import DownloadConfig
from pipeline.sources.base import deduplicate, item_orbit, item_tile, scale_offset
from pipeline.sources.http import redact, redact_text, retry_policy
from pipeline.sources.stac_api import is_loopback, to_earth_search_keys
from tests.support import REPO

DATA = REPO / "tests" / "data"


def es_items():
    return [pystac.Item.from_dict(f) for f in json.loads((DATA / "earth_search_items.json").read_text())["features"]]


def test_reprocessed_granule_keeps_the_newest_baseline():
    items = es_items()
    aoi = shapely.box(98.2, 25.6, 98.3, 25.7)  # inside 47RQL only
    kept, dropped = deduplicate(items, aoi)
    assert [it.id for it in kept] == ["S2B_47RQL_20230105_1_L2A"]
    reasons = {d["id"]: d["reason"] for d in dropped}
    assert "superseded by S2B_47RQL_20230105_1_L2A" in reasons["S2B_47RQL_20230105_0_L2A"]
    assert "covers the whole AOI" in reasons["S2B_47RQM_20230105_0_L2A"]


def test_overlapping_tiles_are_both_kept_when_neither_covers_the_aoi():
    aoi = shapely.box(98.2, 26.1, 98.3, 26.4)  # straddles the 47RQL/47RQM edge
    kept, _ = deduplicate(es_items(), aoi)
    assert sorted(it.id for it in kept) == ["S2B_47RQL_20230105_1_L2A", "S2B_47RQM_20230105_0_L2A"]


def test_orbit_and_tile_from_either_archive():
    es = es_items()[0]
    pc = pystac.Item.from_dict(json.loads((DATA / "planetary_computer_item.json").read_text()))
    assert (item_orbit(es), item_tile(es)) == ("4", "47RQL")
    assert (item_orbit(pc), item_tile(pc)) == ("4", "47RQL")


def test_planetary_computer_keys_and_the_0400_offset_from_the_baseline():
    pc = to_earth_search_keys(pystac.Item.from_dict(json.loads((DATA / "planetary_computer_item.json").read_text())))
    assert {"blue", "red", "nir", "swir16", "scl", "visual"} <= set(pc.assets)
    assert "B04" not in pc.assets
    assert scale_offset(pc, "red") == (0.0001, -0.1)  # no raster:bands: baseline 05.09 >= 04.00
    pc.properties["s2:processing_baseline"] = "03.01"
    assert scale_offset(pc, "red") == (0.0001, 0.0)
    es = es_items()[0]
    es.assets["red"].extra_fields["raster:bands"][0]["offset"] = 0.0  # the asset's own word wins
    assert scale_offset(es, "red") == (0.0001, 0.0)


def test_secrets_are_cut_from_urls_and_a_long_retry_after_is_capped():
    signed = "https://sentinel2l2a01.blob.core.windows.net/x/B04.tif?st=2023&se=2023&sig=SECRET%3D"
    assert "SECRET" not in redact(signed) and redact(signed).endswith("B04.tif")
    assert "pw" not in redact("https://user:pw@host/a")
    gdal = f"HTTP error code: 429 - {signed}. Retrying again in 0.0 secs"  # a GDAL warning, as logged
    assert "SECRET" not in redact_text(gdal) and "/x/B04.tif Retrying again" in redact_text(gdal)

    from urllib3 import HTTPResponse

    policy = retry_policy(DownloadConfig(max_backoff_s=120))
    assert policy.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "7"})) == 7.0
    assert policy.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "3600"})) == 120.0
    assert is_loopback("http://127.0.0.1:8080/") and is_loopback("http://localhost/")
    assert not is_loopback("https://planetarycomputer.microsoft.com/api/stac/v1")


def test_a_local_catalog_takes_current_items_as_written_and_migrates_older_ones(tmp_path):
    from pipeline.sources.base import item_epsg
    from pipeline.sources.local_stac import LocalCatalogSource

    proj = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
    links = []
    for sid, version in (("current", pystac.get_stac_version()), ("older", "1.0.0")):
        item = {
            "type": "Feature",
            "stac_version": version,
            "stac_extensions": [proj],
            "id": sid,
            "geometry": shapely.geometry.mapping(shapely.box(98.2, 25.6, 98.3, 25.7)),
            "bbox": [98.2, 25.6, 98.3, 25.7],
            "links": [],
            "properties": {"datetime": "2023-01-05T04:00:00Z", "proj:epsg": 32647, "eo:cloud_cover": 3.0},
            "assets": {"red": {"href": "red.tif", "type": "image/tiff"}},
        }
        (tmp_path / sid).mkdir()
        (tmp_path / sid / f"{sid}.json").write_text(json.dumps(item))
        links.append({"rel": "item", "href": f"./{sid}/{sid}.json", "type": "application/json"})
    (tmp_path / "catalog.json").write_text(
        json.dumps(
            {
                "type": "Catalog",
                "stac_version": pystac.get_stac_version(),
                "id": "c",
                "description": "c",
                "links": links,
            }
        )
    )
    items = {it.id: it for it in LocalCatalogSource(tmp_path)._items()}
    current, older = items["current"], items["older"]
    assert current.stac_extensions == [proj] and "proj:code" not in current.properties  # as written: not copied
    assert older.properties["proj:code"] == "EPSG:32647"  # migrated, as pystac does
    assert item_epsg(current) == item_epsg(older) == 32647
    assert current.assets["red"].href == str(tmp_path / "current" / "red.tif")  # hrefs made absolute all the same


def test_gdal_read_failures_become_one_line_errors_that_say_what_to_do():
    import rasterio

    from pipeline.sources.http import gdal_download_error

    url = "https://sentinel2l2a01.blob.core.windows.net/x/B04.tif?sig=SECRET"
    throttled = gdal_download_error(url, rasterio.RasterioIOError("HTTP response code: 503"), None)
    assert "failed after 6 tries (last: HTTP 503)" in str(throttled) and "SECRET" not in str(throttled)
    gone = gdal_download_error(url, rasterio.RasterioIOError("HTTP response code: 404"), None)
    assert gone.status == 404 and "re-run the search" in str(gone)
    down = gdal_download_error(url, rasterio.RasterioIOError("CURL error: Could not resolve host: x"), None)
    assert "Could not resolve host" in str(down) and "run again later" in str(down)
    # the file arrived but does not read: not a download error (the fetch reports it as unreadable)
    assert gdal_download_error(url, rasterio.RasterioIOError("Read failed."), None) is None
