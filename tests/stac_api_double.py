"""A STAC API on loopback, served from a contract-3 catalog: the test double of Earth Search v1 and
Planetary Computer.

``StacApiDouble(catalog, flavour)`` is a werkzeug handler for pytest-httpserver (or, run as a script,
a standalone server: ``python tests/stac_api_double.py CATALOG [--port 8000] [--flavour planetary-computer]``
so the pipeline can be tried by hand against an API made from any contract-3 catalog).

It serves ``/`` (landing page), ``/conformance``, ``/collections[/id]``, ``/search`` (GET and POST,
``collections``, ``intersects``/``bbox``, ``datetime``, ``query`` on ``eo:cloud_cover``, paging with
``next`` links carrying a token) and ``/files/...`` (the catalog's assets with HTTP range requests).
Items get absolute ``http`` asset hrefs. The Planetary Computer flavour renames assets to B02..B12/SCL
and drops ``raster:bands`` offsets, as that API's items have none (the loader must use the baseline).

``faults`` injects failures: ``{"/files/.../B04.tif": ["429", "503", "drop"]}`` answers the next
requests for that path with those, in order ("drop" sends half the body, of the range asked for, and cuts
the connection).
"""

from __future__ import annotations

import json
import operator
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import pystac
import shapely
from werkzeug.wrappers import Request, Response

PC_KEYS = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
}
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/conf/geojson",
]


def _dt(s: str | None):
    if s in (None, "", ".."):
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


class StacApiDouble:
    def __init__(self, catalog: str | Path, base_url: str, flavour: str = "earth-search", extra_items=()):
        self.root = Path(catalog).parent if Path(catalog).is_file() else Path(catalog)
        self.base = base_url.rstrip("/")
        self.flavour = flavour
        self.faults: dict[str, list[str]] = {}
        self.file_delay_s = 0.0  # slows asset requests, so a test can kill a fetch halfway
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, range)
        self._lock = threading.Lock()
        cat = pystac.read_file(str(self.root / "catalog.json"))
        self.items = []
        for it in [*cat.get_items(recursive=True), *extra_items]:
            it.make_asset_hrefs_absolute()
            self.items.append(self._shape(it))
        self.items.sort(key=lambda d: (d["properties"].get("datetime") or "", d["id"]))

    def _shape(self, it: pystac.Item) -> dict:
        d = it.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = [{"rel": "self", "href": f"{self.base}/collections/{it.collection_id}/items/{it.id}"}]
        assets = {}
        for k, a in d["assets"].items():
            href = Path(a["href"])
            try:
                a["href"] = f"{self.base}/files/{href.resolve().relative_to(self.root.resolve())}"
            except ValueError:
                pass
            if self.flavour == "planetary-computer" and it.collection_id == "sentinel-2-l2a":
                for rb in a.get("raster:bands", []):
                    rb.pop("offset", None)
                    rb.pop("scale", None)
                k = PC_KEYS.get(k, k)
            assets[k] = a
        d["assets"] = assets
        return d

    # ------------------------------------------------------------------ handler
    def __call__(self, request: Request) -> Response:
        path = request.path
        with self._lock:
            self.log.append((request.method, path, request.headers.get("Range")))
            queue = self.faults.get(path)
            # a HEAD has no body to cut: a "drop" waits for the next GET
            fault = queue.pop(0) if queue and not (request.method == "HEAD" and queue[0] == "drop") else None
        if fault in ("429", "503"):
            return Response("slow down", status=int(fault), headers={"Retry-After": "0"})
        if path.startswith("/files/"):
            if self.file_delay_s:
                import time

                time.sleep(self.file_delay_s)
            return self._file(request, path[len("/files/") :], fault == "drop")
        if path in ("", "/"):
            return self._json(self.landing())
        if path == "/conformance":
            return self._json({"conformsTo": CONFORMS})
        if path == "/collections":
            return self._json({"collections": [self.collection(c) for c in self.collection_ids()], "links": []})
        m = re.fullmatch(r"/collections/([^/]+)", path)
        if m:
            return self._json(self.collection(m.group(1)))
        if path == "/search":
            body = request.get_json(silent=True) if request.method == "POST" else None
            params = body if body is not None else self._get_params(request)
            return self._json(self.search(params, request.method))
        return Response("not found", status=404)

    def _json(self, doc, status=200) -> Response:
        return Response(json.dumps(doc), status=status, mimetype="application/json")

    def _file(self, request: Request, rel: str, drop: bool) -> Response:
        p = (self.root / rel).resolve()
        if not p.is_file() or self.root.resolve() not in p.parents:
            return Response("not found", status=404)
        data = p.read_bytes()
        if drop:  # the response a range request asked for, cut halfway through its body
            status, headers, body = 200, {}, data
            rng = request.range
            if rng is not None and rng.range_for_length(len(data)) is not None:
                start, stop = rng.range_for_length(len(data))
                status, body = 206, data[start:stop]
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            part = body[: max(1, len(body) // 2)]

            def cut():
                yield part
                raise ConnectionAbortedError("double: connection dropped mid-body")

            return Response(
                cut(),
                status=status,
                headers={**headers, "Content-Length": str(len(body)), "Content-Type": "image/tiff"},
            )
        resp = Response(data, mimetype="image/tiff")
        return resp.make_conditional(request, accept_ranges=True, complete_length=len(data))

    # ------------------------------------------------------------------ API documents
    def collection_ids(self):
        return sorted({d.get("collection") for d in self.items if d.get("collection")})

    def landing(self) -> dict:
        return {
            "type": "Catalog",
            "id": f"{self.flavour}-double",
            "stac_version": "1.0.0",
            "description": f"loopback double of {self.flavour}",
            "conformsTo": CONFORMS,
            "links": [
                {"rel": "self", "href": self.base + "/", "type": "application/json"},
                {"rel": "root", "href": self.base + "/", "type": "application/json"},
                {"rel": "conformance", "href": self.base + "/conformance"},
                {"rel": "data", "href": self.base + "/collections"},
                {"rel": "search", "href": self.base + "/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": self.base + "/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def collection(self, cid: str) -> dict:
        return {
            "type": "Collection",
            "id": cid,
            "stac_version": "1.0.0",
            "description": cid,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "self", "href": f"{self.base}/collections/{cid}"}],
        }

    @staticmethod
    def _get_params(request: Request) -> dict:
        a = request.args
        p: dict = {}
        if "collections" in a:
            p["collections"] = a["collections"].split(",")
        if "intersects" in a:
            p["intersects"] = json.loads(a["intersects"])
        if "bbox" in a:
            p["bbox"] = [float(v) for v in a["bbox"].split(",")]
        for k in ("datetime", "token"):
            if k in a:
                p[k] = a[k]
        if "limit" in a:
            p["limit"] = int(a["limit"])
        if "query" in a:
            p["query"] = json.loads(a["query"])
        return p

    def search(self, params: dict, method: str) -> dict:
        hits = self.items
        if params.get("collections"):
            hits = [d for d in hits if d.get("collection") in params["collections"]]
        geom = None
        if params.get("intersects"):
            geom = shapely.geometry.shape(params["intersects"])
        elif params.get("bbox"):
            geom = shapely.box(*params["bbox"])
        if geom is not None:
            hits = [d for d in hits if shapely.geometry.shape(d["geometry"]).intersects(geom)]
        if params.get("datetime"):
            t0, _, t1 = str(params["datetime"]).partition("/")
            t0, t1 = _dt(t0), _dt(t1 or t0)
            hits = [
                d
                for d in hits
                if (t0 is None or _dt(d["properties"]["datetime"]) >= t0)
                and (t1 is None or _dt(d["properties"]["datetime"]) <= t1)
            ]
        for prop, ops in (params.get("query") or {}).items():
            for op, v in ops.items():
                cmp = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge, "eq": operator.eq}[
                    op
                ]
                hits = [d for d in hits if d["properties"].get(prop) is not None and cmp(d["properties"][prop], v)]
        limit = int(params.get("limit") or 10)
        start = int(params.get("token") or 0)
        page = hits[start : start + limit]
        links = [{"rel": "root", "href": self.base + "/"}]
        if start + limit < len(hits):
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": self.base + "/search",
                        "method": "POST",
                        "body": {**params, "token": str(start + limit)},
                        "merge": False,
                        "type": "application/geo+json",
                    }
                )
            else:
                q = {
                    k: (
                        json.dumps(v)
                        if isinstance(v, (dict, list)) and k != "collections"
                        else ",".join(v)
                        if k == "collections"
                        else v
                    )
                    for k, v in params.items()
                }
                q["token"] = str(start + limit)
                from urllib.parse import urlencode

                links.append(
                    {"rel": "next", "href": f"{self.base}/search?{urlencode(q)}", "type": "application/geo+json"}
                )
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(hits),
            "numberReturned": len(page),
        }

    def requests_for(self, prefix: str) -> list:
        return [r for r in self.log if r[1].startswith(prefix)]


if __name__ == "__main__":  # pragma: no cover - a manual tool
    import argparse

    from werkzeug.serving import run_simple

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("catalog")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--flavour", default="earth-search", choices=["earth-search", "planetary-computer"])
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every asset request")
    a = ap.parse_args()
    double = StacApiDouble(a.catalog, f"http://127.0.0.1:{a.port}", a.flavour)
    double.file_delay_s = a.latency_ms / 1000
    run_simple("127.0.0.1", a.port, Request.application(double), threaded=True)
