"""A Sentinel Hub service on loopback (OAuth token, Catalog API, Process API), served from a contract-3
catalog: the test double of the Copernicus Data Space Ecosystem's Sentinel Hub endpoints.

``SentinelHubDouble(catalog, base_url, client_id, client_secret)`` is a werkzeug handler for
pytest-httpserver. It serves

* ``POST .../protocol/openid-connect/token`` (client credentials, form body): bearer tokens that
  expire after ``expires_in`` seconds; ``revoke_all()`` makes every token issued so far answer 401;
* ``POST /api/v1/catalog/1.0.0/search``: the catalog's Sentinel-2 items as Sentinel Hub Catalog
  features (ids are ESA product names, no data assets), ``intersects``/``bbox``, ``datetime``,
  ``filter`` on ``eo:cloud_cover`` in CQL2 text, paging by ``limit`` and the integer ``next`` of the
  ``context`` member;
* ``POST /api/v1/process``: a GeoTIFF of the bands the evalscript asks for, of the most recent scene in
  ``timeRange``, warped onto the requested bbox/CRS/width/height, values harmonised as Sentinel Hub
  does by default (the +1000 DN of baseline 04.00 removed, clamped at 0), valid pixels at least 1 and
  nodata 0 as our evalscript asks; type ``dem`` renders the catalog's cop-dem-glo-30 tile (bilinear).
  Requests over 2500 px a side are refused with 400, as the real API does.

``faults`` injects failures per path, as in ``stac_api_double``: ``{"/api/v1/process": ["429"]}``.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pystac
import rasterio
import shapely
from affine import Affine
from rasterio.warp import Resampling, reproject
from werkzeug.wrappers import Request, Response

from pipeline.sources.base import item_orbit, item_tile, scale_offset

SH_BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "SCL": "scl"}
MAX_PX = 2500


def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


class SentinelHubDouble:
    def __init__(self, catalog: str | Path, base_url: str, client_id: str, client_secret: str, expires_in: int = 3600):
        self.base = base_url.rstrip("/")
        self.client_id, self.client_secret, self.expires_in = client_id, client_secret, expires_in
        self.tokens: dict[str, float] = {}
        self.faults: dict[str, list[str]] = {}
        self.log: list[tuple[str, str]] = []
        self.process_requests: list[dict] = []
        self.catalog_bodies: list[dict] = []
        self.token_requests = 0
        self._lock = threading.Lock()
        cat = pystac.read_file(str(Path(catalog)))
        self.scenes, self.dem = [], None
        for it in cat.get_items(recursive=True):
            it.make_asset_hrefs_absolute()
            if it.collection_id == "cop-dem-glo-30":
                self.dem = it
            else:
                self.scenes.append(it)
        self.scenes.sort(key=lambda it: it.datetime)
        self.hidden_after: str | None = None  # serve only scenes sensed up to this day (an archive that grows)

    # ------------------------------------------------------------------ helpers
    def revoke_all(self) -> None:
        with self._lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def product_id(self, it: pystac.Item) -> str:
        p = it.properties
        baseline = str(p.get("s2:processing_baseline") or "02.14").replace(".", "")
        orbit = int(item_orbit(it) or 0)
        sat = "S2A" if str(p.get("platform", "sentinel-2a")).endswith("a") else "S2B"
        when = f"{it.datetime:%Y%m%dT%H%M%S}"
        return f"{sat}_MSIL2A_{when}_N{baseline}_R{orbit:03d}_T{item_tile(it)}_{when}"

    def feature(self, it: pystac.Item) -> dict:
        p = it.properties
        return {
            "stac_version": "1.0.0",
            "type": "Feature",
            "id": self.product_id(it),
            "geometry": it.geometry,
            "bbox": it.bbox,
            "properties": {
                "datetime": it.datetime.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "platform": p.get("platform", "sentinel-2a"),
                "instruments": ["msi"],
                "constellation": "sentinel-2",
                "gsd": 10,
                "eo:cloud_cover": p.get("eo:cloud_cover"),
                "proj:epsg": p.get("proj:epsg") or 32647,
            },
            "assets": {},
            "links": [],
            "collection": "sentinel-2-l2a",
        }

    def served(self) -> list[pystac.Item]:
        return [
            it for it in self.scenes if self.hidden_after is None or it.datetime.date().isoformat() <= self.hidden_after
        ]

    def _authorised(self, request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        tok = auth.removeprefix("Bearer ")
        with self._lock:
            exp = self.tokens.get(tok)
        return exp is not None and exp > time.time()

    # ------------------------------------------------------------------ handler
    def __call__(self, request: Request) -> Response:
        path = request.path
        with self._lock:
            self.log.append((request.method, path))
            queue = self.faults.get(path)
            fault = queue.pop(0) if queue else None
        if fault in ("429", "503"):
            return Response(
                json.dumps({"status": int(fault), "reason": "Too Many Requests"}),
                status=int(fault),
                headers={"Retry-After": "0"},
                mimetype="application/json",
            )
        if path.endswith("/protocol/openid-connect/token") and request.method == "POST":
            return self.token(request)
        if not self._authorised(request):
            return Response(
                json.dumps(
                    {"error": {"status": 401, "reason": "Unauthorized", "message": "Token is expired or invalid"}}
                ),
                status=401,
                mimetype="application/json",
            )
        if path == "/api/v1/catalog/1.0.0/search" and request.method == "POST":
            return self.search(request.get_json())
        if path == "/api/v1/process" and request.method == "POST":
            return self.process(request.get_json())
        return Response("not found", status=404)

    def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}
        self.token_requests += 1
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return Response(
                json.dumps({"error": "unauthorized_client", "error_description": "Invalid client credentials"}),
                status=401,
                mimetype="application/json",
            )
        tok = f"tok-{self.token_requests}-{time.time_ns()}"
        with self._lock:
            self.tokens[tok] = time.time() + self.expires_in
        return Response(
            json.dumps(
                {
                    "access_token": tok,
                    "expires_in": self.expires_in,
                    "token_type": "Bearer",
                    "refresh_expires_in": 0,
                    "not-before-policy": 0,
                    "scope": "email profile",
                }
            ),
            mimetype="application/json",
        )

    def search(self, body: dict) -> Response:
        self.catalog_bodies.append(body)
        hits = self.served()
        if body.get("intersects"):
            g = shapely.geometry.shape(body["intersects"])
            hits = [it for it in hits if shapely.geometry.shape(it.geometry).intersects(g)]
        if body.get("datetime"):
            t0, _, t1 = body["datetime"].partition("/")
            hits = [it for it in hits if _dt(t0) <= it.datetime <= _dt(t1)]
        m = re.fullmatch(r"eo:cloud_cover\s*(<=|<)\s*([\d.]+)", str(body.get("filter") or "").strip())
        if m:
            v = float(m.group(2))
            hits = [
                it
                for it in hits
                if (it.properties["eo:cloud_cover"] <= v if m.group(1) == "<=" else it.properties["eo:cloud_cover"] < v)
            ]
        limit = min(int(body.get("limit", 10)), 100)
        start = int(body.get("next", 0))
        page = hits[start : start + limit]
        ctx = {"limit": limit, "returned": len(page)}
        if start + limit < len(hits):
            ctx["next"] = start + limit
        return Response(
            json.dumps(
                {
                    "type": "FeatureCollection",
                    "features": [self.feature(it) for it in page],
                    "links": [],
                    "context": ctx,
                }
            ),
            mimetype="application/geo+json",
        )

    def process(self, body: dict) -> Response:
        self.process_requests.append(body)
        bounds, out = body["input"]["bounds"], body["output"]
        w, h = int(out["width"]), int(out["height"])
        if w > MAX_PX or h > MAX_PX:
            return Response(
                json.dumps(
                    {
                        "error": {
                            "status": 400,
                            "reason": "Bad Request",
                            "message": f"Requested image is too large: {w}x{h}",
                        }
                    }
                ),
                status=400,
                mimetype="application/json",
            )
        epsg = int(bounds["properties"]["crs"].rsplit("/", 1)[1])
        left, bottom, right, top = bounds["bbox"]
        dst_t = Affine((right - left) / w, 0, left, 0, -(top - bottom) / h, top)
        data = body["input"]["data"][0]
        if data["type"] == "dem":
            arr = self._warp(self.dem.assets["data"].href, dst_t, epsg, (h, w), np.float32, Resampling.bilinear)[None]
        else:
            bands = json.loads(re.search(r"bands:\s*(\[[^\]]*\])", body["evalscript"]).group(1))
            bands = [b for b in bands if b != "dataMask"]
            tr = data["dataFilter"]["timeRange"]
            scenes = [it for it in self.served() if _dt(tr["from"]) <= it.datetime <= _dt(tr["to"])]
            arr = np.zeros((len(bands), h, w), np.uint16)
            if scenes:
                it = scenes[-1]  # mostRecent
                harmonise = data.get("processing", {}).get("harmonizeValues", True)
                for i, b in enumerate(bands):
                    key = SH_BANDS[b]
                    dn = self._warp(it.assets[key].href, dst_t, epsg, (h, w), np.uint16, Resampling.nearest).astype(
                        np.int32
                    )
                    if b != "SCL":
                        valid = dn > 0
                        if harmonise and scale_offset(it, key)[1] < 0:
                            dn = np.clip(dn - 1000, 0, None)
                        dn = np.where(valid, np.maximum(dn, 1), 0)
                    arr[i] = dn
        buf = io.BytesIO()
        with rasterio.MemoryFile() as mem:
            with mem.open(
                driver="GTiff",
                width=w,
                height=h,
                count=arr.shape[0],
                dtype=arr.dtype,
                crs=f"EPSG:{epsg}",
                transform=dst_t,
            ) as ds:
                ds.write(arr)
            buf.write(mem.read())
        return Response(buf.getvalue(), mimetype="image/tiff")

    @staticmethod
    def _warp(href: str, dst_t: Affine, epsg: int, shape, dtype, resampling) -> np.ndarray:
        dst = np.zeros(shape, dtype)
        with rasterio.open(href) as src:
            reproject(
                rasterio.band(src, 1),
                dst,
                dst_transform=dst_t,
                dst_crs=f"EPSG:{epsg}",
                dst_nodata=0,
                resampling=resampling,
            )
        return dst
