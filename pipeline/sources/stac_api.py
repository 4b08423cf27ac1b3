"""STAC API sources: Earth Search v1 (Element 84, AWS) and Microsoft Planetary Computer.

Both serve ``sentinel-2-l2a`` and ``cop-dem-glo-30``. Items are handed on shaped like Earth Search v1
(contract 3): Planetary Computer's asset keys (B02..B12, SCL) are renamed to Earth Search's common
names, so the cache, the loader and every later stage see one layout. Planetary Computer's asset
URLs need a short-lived SAS token; items are signed just before their assets are read (``sign``),
never stored signed.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import date
from urllib.parse import urlparse

import pystac
import shapely
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from pipeline.config import DownloadConfig
from pipeline.errors import NoScenesError, SourceError
from pipeline.sources.base import SceneSearch, deduplicate, period_bounds
from pipeline.sources.http import redact, retry_policy

log = logging.getLogger(__name__)

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
DEFAULT_URLS = {"earth-search": EARTH_SEARCH_URL, "planetary-computer": PLANETARY_COMPUTER_URL}

# Planetary Computer (and ESA SAFE) band names -> Earth Search v1 common names (contract 3).
PC_ASSET_KEYS = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
    "AOT": "aot",
    "WVP": "wvp",
    "visual": "visual",
}


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def to_earth_search_keys(item: pystac.Item) -> pystac.Item:
    """Rename B02..B12/SCL assets to blue..swir22/scl (in place); Earth Search items pass unchanged."""
    if not any(k in item.assets for k in ("B02", "SCL")):
        return item
    assets = dict(item.assets)
    item.assets.clear()
    for key, asset in assets.items():
        item.assets[PC_ASSET_KEYS.get(key, key)] = asset
    return item


class StacApiSource:
    """Searches a STAC API; pages through ``next`` links (pystac-client follows them)."""

    def __init__(
        self,
        kind: str,
        url: str | None,
        collection: str = "sentinel-2-l2a",
        dem_collection: str = "cop-dem-glo-30",
        download: DownloadConfig | None = None,
        page_size: int = 100,
    ):
        self.name = kind
        self.url = (url or DEFAULT_URLS[kind]).rstrip("/")
        self.collection = collection
        self.dem_collection = dem_collection
        self.download = download or DownloadConfig()
        self.page_size = page_size
        self.signs = kind == "planetary-computer" and not is_loopback(self.url)

    def _client(self) -> Client:
        try:
            d = self.download
            return Client.open(
                self.url, stac_io=StacApiIO(max_retries=retry_policy(d), timeout=d.timeout_s), timeout=d.timeout_s
            )
        except (APIError, OSError, ValueError) as e:
            raise SourceError(
                f"cannot open the STAC API at {redact(self.url)} ({_short(e)}): check --stac-url and the network"
            ) from None

    def _search(
        self,
        client: Client,
        collection: str,
        aoi_wgs84,
        start: date | None,
        end: date | None,
        max_cloud_cover: float | None,
    ) -> list[pystac.Item]:
        kw = {"collections": [collection], "intersects": shapely.geometry.mapping(aoi_wgs84), "limit": self.page_size}
        if start is not None and end is not None:
            t0, t1 = period_bounds(start, end)
            kw["datetime"] = [t0, t1]
        if max_cloud_cover is not None and client.conforms_to("QUERY"):
            kw["query"] = {"eo:cloud_cover": {"lte": max_cloud_cover}}
        try:
            return list(client.search(**kw).items())
        except (APIError, OSError) as e:
            raise SourceError(
                f"search of {collection} at {redact(self.url)} failed ({_short(e)}): retry later or check --stac-url"
            ) from None

    def search(self, aoi_wgs84, start: date, end: date, max_cloud_cover: float) -> SceneSearch:
        client = self._client()
        items = [
            to_earth_search_keys(it)
            for it in self._search(client, self.collection, aoi_wgs84, start, end, max_cloud_cover)
        ]
        skipped = []
        scenes = []
        for it in items:
            cc = it.properties.get("eo:cloud_cover")
            if cc is not None and cc > max_cloud_cover:  # an API without the query extension sends them all
                skipped.append({"id": it.id, "reason": f"eo:cloud_cover {cc:.0f}% above {max_cloud_cover:.0f}%"})
            else:
                scenes.append(it)
        scenes, duplicates = deduplicate(scenes, aoi_wgs84)
        dem = self._search(client, self.dem_collection, aoi_wgs84, None, None, None) if self.dem_collection else []
        if not scenes:
            raise NoScenesError(
                f"{self.name} at {redact(self.url)} has no {self.collection} scene over the AOI for "
                f"{start}..{end} under {max_cloud_cover:.0f}% cloud: widen the period or raise "
                "source.max_cloud_cover"
            )
        log.info(
            "%s: %d scenes (%d duplicates dropped), %d DEM tiles", self.name, len(scenes), len(duplicates), len(dem)
        )
        return SceneSearch(scenes=scenes, dem=dem, skipped=[*skipped, *duplicates])

    def sign(self, item: pystac.Item) -> pystac.Item:
        """A copy whose asset hrefs can be read now (Planetary Computer: SAS-signed)."""
        if not self.signs:
            return item
        import planetary_computer

        try:
            return planetary_computer.sign(item)
        except Exception as e:  # noqa: BLE001 - the token service fails in many ways
            raise SourceError(
                f"could not sign {item.id} with the Planetary Computer token service ({_short(e)}): retry later"
            ) from None


def _short(e: BaseException) -> str:
    return redact(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]
