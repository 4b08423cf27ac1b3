"""Sentinel Hub source: Catalog API search, Process API rendering onto the AOI grid, into the scene cache.

Default service: the Copernicus Data Space Ecosystem (free with an account); commercial Sentinel Hub
with ``source.sh_base_url`` / ``source.sh_token_url`` (or a sentinelhub config profile that sets them).

How a scene is made. The Catalog API lists granules (MGRS tiles); one overpass over the AOI is one
scene here (same platform, same day: the tiles of one datatake), because the Process API mosaics the
tiles of a time range itself. For each scene the Process API renders, on the AOI's own UTM grid
plus a margin of ``MARGIN_PX`` 20 m pixels (what the STAC clips keep for the bilinear kernel):

* ``blue green red nir`` at 10 m, one request, uint16 DN;
* ``swir16`` and ``scl`` at 20 m, one request (uint16; SCL cast to uint8 here);
* the Copernicus DEM (GLO-30) at 10 m, float32 metres, once per AOI grid.

Requests larger than ``MAX_PX`` (the API's 2500 x 2500 px limit) are split into tiles on the grid's
lattice and mosaicked. The results are written into the same ``SceneCache`` layout as the STAC
sources' clips (COG, record with SHA-256, ``item.json`` last), so every later stage is unchanged.

Values: Sentinel Hub *harmonises* Sentinel-2 L2A by default (``harmonizeValues: true``): the +1000 DN
offset of processing baseline 04.00 is removed on the server, so every scene, before or after
25 Jan 2022, reads reflectance = DN x 0.0001 with offset 0. The cached items say so in
``raster:bands`` (scale 0.0001, offset 0), which the loader reads before any baseline. Valid pixels
are at least DN 1 (a harmonised reflectance clamped at 0 would otherwise read as nodata); nodata is 0.

Credentials: ``SH_CLIENT_ID`` / ``SH_CLIENT_SECRET`` in the environment, else the sentinelhub config
profile (``SH_PROFILE`` or the default profile of ``~/.config/sentinelhub/config.toml``). The secret is
sent only in the token request's form body; it is never logged, never in an error and never in
``run.json`` (the config records neither).

sentinelhub-py does the service's protocol: ``SentinelHubSession`` fetches OAuth tokens and refreshes
them before they expire (and here once more when the service answers 401, a token revoked early),
``SentinelHubCatalog`` searches and pages, ``SentinelHubRequest`` writes the Process API request. The
Process API's images are fetched through ``Http``, the urllib3 retry policy of the STAC sources, so
their bytes and retries count in the run's fetch report; the Catalog's few JSON pages go through
sentinelhub-py's own client, given the same attempts, first wait and timeout.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import rasterio
import shapely
from odc.geo.geobox import GeoBox

from pipeline.aoi import grid_crs
from pipeline.config import DownloadConfig
from pipeline.errors import ConfigError, NoScenesError, SourceError
from pipeline.sources.base import (
    DEM_COLLECTION,
    S2_COLLECTION,
    SceneSearch,
    period_bounds,
)
from pipeline.sources.http import DownloadError, Http, redact

if TYPE_CHECKING:
    from sentinelhub import SentinelHubSession

log = logging.getLogger(__name__)

CDSE_URL = "https://sh.dataspace.copernicus.eu"
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
PROCESS_PATH = "/api/v1/process"  # where the scenes' assets point (rendered, not files)
MAX_PX = 2500  # Process API: at most 2500 x 2500 px per request
MARGIN_PX = 4  # 20 m pixels around the AOI grid, as the STAC clips keep
PAGE_SIZE = 100  # Catalog API maximum
TOKEN_MARGIN_S = 60  # refresh a token this long before it expires
PASS_WINDOW = timedelta(minutes=5)  # a datatake's tiles over one AOI are sensed within seconds
MISSING_CREDENTIALS = (
    "source sentinelhub needs credentials: set SH_CLIENT_ID and SH_CLIENT_SECRET (an OAuth "
    "client of your Copernicus Data Space or Sentinel Hub account), or save them in a "
    "sentinelhub config profile (sentinelhub.config --sh_client_id ... --sh_client_secret ...)"
)

# what each rendered product holds: asset -> (Sentinel Hub band, 10/20 m)
PRODUCTS: dict[str, dict[str, Any]] = {
    "10m": {"res": 10, "bands": {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}},
    "20m": {"res": 20, "bands": {"swir16": "B11", "scl": "SCL"}},
}
ASSET_PRODUCT = {a: p for p, spec in PRODUCTS.items() for a in spec["bands"]}


@dataclass(frozen=True)
class Credentials:
    client_id: str
    client_secret: str = field(repr=False)
    origin: str = "environment"


def load_credentials() -> tuple[Credentials, str | None, str | None]:
    """(credentials, base URL, token URL) from the environment, else the sentinelhub profile; the URLs
    are None unless the profile sets non-default ones."""
    cid, secret = os.environ.get("SH_CLIENT_ID", "").strip(), os.environ.get("SH_CLIENT_SECRET", "").strip()
    if cid and secret:
        return Credentials(cid, secret), None, None
    try:
        from sentinelhub import SHConfig

        profile = os.environ.get("SH_PROFILE") or None
        cfg = SHConfig(profile) if profile else SHConfig()
        default = SHConfig(use_defaults=True)
    except Exception as e:  # noqa: BLE001 - a broken or absent profile file: same advice
        log.debug("sentinelhub profile unreadable: %s", type(e).__name__)
        raise ConfigError(MISSING_CREDENTIALS) from None
    if not (cfg.sh_client_id and cfg.sh_client_secret):
        raise ConfigError(MISSING_CREDENTIALS)
    base = cfg.sh_base_url if cfg.sh_base_url != default.sh_base_url else None
    token = cfg.sh_token_url if cfg.sh_token_url != default.sh_token_url else None
    return Credentials(cfg.sh_client_id, cfg.sh_client_secret, "sentinelhub profile"), base, token


class SentinelHubSource:
    name = "sentinelhub"

    def __init__(
        self,
        base_url: str | None = None,
        token_url: str | None = None,
        collection: str = S2_COLLECTION,
        dem: bool = True,
        download: DownloadConfig | None = None,
        max_px: int | None = None,
        creds: Credentials | None = None,
        grid=None,
    ):
        from sentinelhub import DataCollection, SHConfig

        if creds is None:
            creds, prof_base, prof_token = load_credentials()
            base_url, token_url = base_url or prof_base, token_url or prof_token
        self.base = (base_url or CDSE_URL).rstrip("/")
        self.token_url = token_url or (
            CDSE_TOKEN_URL if self.base == CDSE_URL else f"{self.base}/auth/realms/main/protocol/openid-connect/token"
        )
        self.collection, self.dem, self.max_px = collection, dem, max_px or MAX_PX
        d = download or DownloadConfig()
        self.config = SHConfig(
            use_defaults=True,
            sh_client_id=creds.client_id,
            sh_client_secret=creds.client_secret,
            sh_base_url=self.base,
            sh_token_url=self.token_url,
            max_download_attempts=d.retries + 1,
            download_sleep_time=d.backoff_s,
            download_timeout_seconds=d.timeout_s,
            max_retries=d.retries + 1,
        )
        if collection != DataCollection.SENTINEL2_L2A.api_id:
            raise ConfigError(
                f"source.collection '{collection}' is not Sentinel Hub's Sentinel-2 L2A: use "
                f"{DataCollection.SENTINEL2_L2A.api_id}"
            )
        # sentinelhub-py ties its collections to services.sentinel-hub.com; these are served by self.base
        self.s2 = DataCollection.SENTINEL2_L2A.define_from(f"{collection} at {self.base}", service_url=self.base)
        self.dem_collection = DataCollection.DEM_COPERNICUS_30.define_from(f"dem at {self.base}", service_url=self.base)
        self.http = Http(d)
        self._session: SentinelHubSession | None = None
        self._lock = threading.Lock()
        self.grid: GeoBox | None = grid  # the AOI grid to render onto; set by find_scenes

    # ------------------------------------------------------------------ OAuth token
    def session(self, renew: bool = False):
        """sentinelhub-py's token session, made (a token fetched) on first use or when ``renew``."""
        from sentinelhub import SentinelHubSession

        for name in ("requests_oauthlib.oauth2_session", "oauthlib"):
            logging.getLogger(name).addFilter(_NO_TOKEN_BODIES)
        with self._lock, self._token_errors():
            if self._session is None or renew:
                self._session = SentinelHubSession(self.config, refresh_before_expiry=TOKEN_MARGIN_S)
            return self._session

    def headers(self, session) -> dict:
        with self._lock, self._token_errors():  # a token near its expiry is fetched anew here
            return session.session_headers

    @contextmanager
    def _token_errors(self):
        import requests
        from oauthlib.oauth2 import InsecureTransportError, OAuth2Error
        from sentinelhub.exceptions import DownloadFailedException

        try:
            yield
        except InsecureTransportError:
            raise SourceError(f"the token URL {self.token_url} is not https: check source.sh_token_url") from None
        except OAuth2Error as e:
            raise SourceError(
                f"Sentinel Hub refused the credentials ({e.description or e.error}): check "
                "SH_CLIENT_ID / SH_CLIENT_SECRET, or the sentinelhub profile"
            ) from None
        except (DownloadFailedException, requests.RequestException) as e:
            raise SourceError(
                f"the Sentinel Hub token request to {self.token_url} failed ({_cause(e)}): check "
                "source.sh_token_url and the network, or retry later"
            ) from None

    def _with_token(self, call):
        """``call(session)``; once more with a new token if the service answers 401 (a token revoked early)."""
        try:
            return call(self.session())
        except Exception as e:
            if _status(e) != 401:
                raise
            log.info("sentinelhub: token refused (expired or revoked): fetching a new one")
            return call(self.session(renew=True))

    # ------------------------------------------------------------------ Catalog API
    def search(self, aoi_wgs84, start: date, end: date, max_cloud_cover: float) -> SceneSearch:
        from sentinelhub import (
            CRS,
            Geometry,
            SentinelHubCatalog,
            SentinelHubDownloadClient,
        )
        from sentinelhub.exceptions import (
            DownloadFailedException,
            OutOfRequestsException,
        )

        t0, t1 = period_bounds(start, end)
        catalog = SentinelHubCatalog(config=self.config)

        def pages(session) -> list[dict]:
            catalog.client = SentinelHubDownloadClient(config=self.config, session=session)
            return list(
                catalog.search(
                    self.collection,
                    time=(t0, t1),
                    geometry=Geometry(aoi_wgs84, CRS.WGS84),
                    filter=f"eo:cloud_cover <= {max_cloud_cover:g}",
                    limit=PAGE_SIZE,
                )
            )

        try:
            features = self._with_token(pages)
        except (DownloadFailedException, OutOfRequestsException) as e:
            raise SourceError(
                f"Sentinel Hub Catalog search at {self.base} failed ({_cause(e)}): check "
                "source.sh_base_url, or retry later"
            ) from None
        scenes, skipped = self._overpasses(features, max_cloud_cover)
        if not scenes:
            raise NoScenesError(
                f"sentinelhub at {self.base} has no {self.collection} scene over the AOI for "
                f"{start}..{end} under {max_cloud_cover:.0f}% cloud: widen the period or raise "
                "source.max_cloud_cover"
            )
        dem = [self._dem_item(aoi_wgs84)] if self.dem else []
        log.info("sentinelhub: %d granules -> %d overpasses", len(features), len(scenes))
        return SceneSearch(scenes=scenes, dem=dem, skipped=skipped)

    def _overpasses(self, features: list[dict], max_cloud_cover: float) -> tuple[list[pystac.Item], list[dict]]:
        groups: dict[tuple, list[dict]] = {}
        skipped = []
        for f in features:
            p = f.get("properties", {})
            cc = p.get("eo:cloud_cover")
            if cc is not None and cc > max_cloud_cover:
                skipped.append({"id": f["id"], "reason": f"eo:cloud_cover {cc:.0f}% above {max_cloud_cover:.0f}%"})
                continue
            when = _dt(p["datetime"])
            groups.setdefault((_platform(f), when.date()), []).append(f)
        items = []
        for (platform, _), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            times = sorted(_dt(f["properties"]["datetime"]) for f in group)
            first = min(group, key=lambda f: f["properties"]["datetime"])
            geom = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in group])
            orbit = _product_field(first["id"], "R")
            sid = f"{platform.upper()}_{times[0]:%Y%m%dT%H%M%S}_{('R' + orbit) if orbit else 'R000'}_SH"
            baseline = _product_field(first["id"], "N")
            props = {
                "datetime": _iso(times[0]),
                "platform": platform,
                "eo:cloud_cover": max(float(f["properties"].get("eo:cloud_cover") or 0) for f in group),
                "sentinelhub:granules": sorted(f["id"] for f in group),
                "sentinelhub:time_range": [_iso(times[0] - PASS_WINDOW), _iso(times[-1] + PASS_WINDOW)],
                "sentinelhub:harmonized": True,
            }
            if baseline:
                props["s2:processing_baseline"] = f"{baseline[:2]}.{baseline[2:]}"
            if orbit:
                props["sat:relative_orbit"] = int(orbit)
            if self.grid is not None and self.grid.crs is not None and self.grid.crs.epsg:
                props["proj:epsg"] = self.grid.crs.epsg
            item = pystac.Item(
                sid, shapely.geometry.mapping(geom), list(geom.bounds), times[0], props, collection=S2_COLLECTION
            )
            for asset, product in ASSET_PRODUCT.items():
                rb = (
                    {"nodata": 0, "data_type": "uint8"}
                    if asset == "scl"
                    else {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": 0.0}
                )  # harmonised: see above
                item.add_asset(
                    asset,
                    pystac.Asset(
                        f"{self.base}{PROCESS_PATH}#{sid}/{asset}",
                        media_type=pystac.MediaType.GEOTIFF,
                        roles=["data"],
                        extra_fields={"raster:bands": [rb], "gsd": PRODUCTS[product]["res"]},
                    ),
                )
            items.append(item)
        return items, skipped

    def _dem_item(self, aoi_wgs84) -> pystac.Item:
        it = pystac.Item(
            "COPERNICUS_30_SH",
            shapely.geometry.mapping(aoi_wgs84),
            list(aoi_wgs84.bounds),
            datetime(2021, 1, 1, tzinfo=timezone.utc),
            {"sentinelhub:dem_instance": "COPERNICUS_30"},
            collection=DEM_COLLECTION,
        )
        it.add_asset(
            "data",
            pystac.Asset(
                f"{self.base}{PROCESS_PATH}#dem/COPERNICUS_30", media_type=pystac.MediaType.GEOTIFF, roles=["data"]
            ),
        )
        return it

    # ------------------------------------------------------------------ Process API
    def render(self, item: pystac.Item, assets: list[str], http: Http | None = None) -> dict[str, tuple]:
        """Render ``assets`` of ``item`` on the padded AOI grid: {asset: (array, crs, transform, nodata, href)}.

        ``http``: the fetch's Http, so bytes and retries count in the run's fetch report."""
        grid = self.grid
        if grid is None or grid.crs is None:
            raise SourceError("the sentinelhub source needs the AOI grid before rendering (internal error)")
        if http is not None:
            self.http = http
        out = {}
        if item.collection_id == DEM_COLLECTION:
            data, transform = self._render(grid, _dem_spec(self.dem_collection), 10, "float32", 1)
            return {"data": (data[0], grid.crs, transform, None, item.assets["data"].href)}
        tr = item.properties["sentinelhub:time_range"]
        for product in sorted({ASSET_PRODUCT[a] for a in assets}):
            spec = PRODUCTS[product]
            bands = list(spec["bands"].items())
            data, transform = self._render(
                grid, _s2_spec(self.s2, tr, [b for _, b in bands]), spec["res"], "uint16", len(bands)
            )
            for i, (asset, _) in enumerate(bands):
                if asset in assets:
                    arr = data[i].astype(np.uint8) if asset == "scl" else data[i]
                    out[asset] = (arr, grid.crs, transform, 0, item.assets[asset].href)
        return out

    def _render(
        self, grid: GeoBox, spec: dict, res: int, dtype: str, nbands: int
    ) -> tuple[np.ndarray, rasterio.Affine]:
        left, bottom, right, top = grid.boundingbox
        pad = MARGIN_PX * 20
        left, bottom, right, top = left - pad, bottom - pad, right + pad, top + pad
        width, height = round((right - left) / res), round((top - bottom) / res)
        mosaic = np.zeros((nbands, height, width), dtype)
        step = self.max_px
        for r0 in range(0, height, step):
            for c0 in range(0, width, step):
                h, w = min(step, height - r0), min(step, width - c0)
                bbox = (left + c0 * res, top - (r0 + h) * res, left + (c0 + w) * res, top - r0 * res)
                mosaic[:, r0 : r0 + h, c0 : c0 + w] = self._request(grid, spec, bbox, w, h, dtype, nbands)
        return mosaic, rasterio.Affine(res, 0, left, 0, -res, top)

    def _request(
        self, grid: GeoBox, spec: dict, bbox: tuple[float, float, float, float], w: int, h: int, dtype: str, nbands: int
    ) -> np.ndarray:
        from sentinelhub import CRS, BBox, MimeType, SentinelHubRequest

        request = SentinelHubRequest(
            evalscript=spec["evalscript"],
            input_data=[spec["input"]],
            size=(w, h),
            responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
            bbox=BBox(bbox, CRS(grid_crs(grid).epsg)),
            config=self.config,
        )
        dl = request.download_list[0]

        def post(session):
            return self.http.request(
                "POST", dl.url, json=dl.post_values, headers={**dl.headers, **self.headers(session)}
            )

        try:
            resp = self._with_token(post)
        except DownloadError as e:
            raise SourceError(f"Sentinel Hub Process request failed: {e}") from None
        self.http.stats.add(nbytes=len(resp.content))
        self.http.progress.add_bytes(len(resp.content))
        try:
            with rasterio.MemoryFile(io.BytesIO(resp.content)) as mem, mem.open() as src:
                data = src.read()
        except rasterio.RasterioIOError:
            raise SourceError(
                f"the Process API returned no readable GeoTIFF ({resp.headers.get('Content-Type')}, "
                f"{len(resp.content)} bytes)"
            ) from None
        if data.shape != (nbands, h, w):
            raise SourceError(f"the Process API returned {data.shape} for a {nbands} x {h} x {w} request")
        return data.astype(dtype, copy=False)


def _s2_spec(collection, time_range: list[str], bands: list[str]) -> dict:
    from sentinelhub import MosaickingOrder, ResamplingType, SentinelHubRequest

    outs = ", ".join(f"s.{b}" if b == "SCL" else f"Math.max(1, s.{b})" for b in bands)
    script = f"""//VERSION=3
function setup() {{
  return {{input: [{{bands: {[*bands, "dataMask"]!r}, units: "DN"}}],
          output: {{bands: {len(bands)}, sampleType: "UINT16"}}}};
}}
function evaluatePixel(s) {{
  if (s.dataMask == 0) return {[0] * len(bands)!r};
  return [{outs}];
}}
""".replace("'", '"')
    data = SentinelHubRequest.input_data(
        collection,
        time_interval=(time_range[0], time_range[1]),
        maxcc=1.0,
        mosaicking_order=MosaickingOrder.MOST_RECENT,
        upsampling=ResamplingType.NEAREST,
        downsampling=ResamplingType.NEAREST,
        other_args={"processing": {"harmonizeValues": True}},
    )
    return {"input": data, "evalscript": script}


def _dem_spec(collection) -> dict:
    from sentinelhub import ResamplingType, SentinelHubRequest

    script = """//VERSION=3
function setup() {
  return {input: ["DEM"], output: {bands: 1, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) {
  return [s.DEM];
}
"""
    data = SentinelHubRequest.input_data(
        collection, upsampling=ResamplingType.BILINEAR, downsampling=ResamplingType.BILINEAR
    )
    return {"input": data, "evalscript": script}


def _status(e: BaseException) -> int | None:
    """The HTTP status behind our DownloadError or sentinelhub-py's DownloadFailedException."""
    status = getattr(e, "status", None)
    if status is not None:
        return int(status)
    response = getattr(getattr(e, "request_exception", None), "response", None)
    return getattr(response, "status_code", None)


def _cause(e: BaseException) -> str:
    """One line for sentinelhub-py's many-line download errors: the requests error under them."""
    import requests

    inner = getattr(e, "request_exception", None) or e
    if isinstance(inner, requests.ConnectionError):
        return "cannot connect"  # its text is urllib3's pool and socket internals
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {redact(text)[:200]}"


class _NoTokenBodies(logging.Filter):
    """requests-oauthlib's DEBUG records show the token request's form (the client secret) and the
    token response: they are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_NO_TOKEN_BODIES = _NoTokenBodies()


def _platform(f: dict) -> str:
    p = str(f.get("properties", {}).get("platform") or "").lower()
    if p:
        return p
    return {"S2A": "sentinel-2a", "S2B": "sentinel-2b", "S2C": "sentinel-2c"}.get(
        f["id"][:3].upper(), f["id"][:3].lower()
    )


def _product_field(product_id: str, letter: str) -> str:
    """``N0400`` -> "0400", ``R047`` -> "047" from an ESA product name (the Catalog's item ids)."""
    for part in product_id.split("_"):
        if len(part) in (4, 5) and part[0] == letter and part[1:].isdigit():
            return part[1:]
    return ""


def _dt(s: str) -> datetime:
    d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _iso(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tiles_needed(width: int, height: int, max_px: int = MAX_PX) -> int:
    return math.ceil(width / max_px) * math.ceil(height / max_px)
