"""Time a fetch into the scene cache from the loopback STAC API double, with and without latency.

    PYTHONPATH=. python tests/bench_fetch.py [--size-km 3] [--latency-ms 0 80] [--repeat 2] [--server-process]

Simulates an AOI once (kept in ``--work``), serves it with ``StacApiDouble`` on loopback (in this
process, or with ``--server-process`` in one of its own, as a real archive is), and for each latency
(added to every asset request by the double) fetches every scene's bands into a fresh cache with the
pipeline's own reader. Prints the wall time, the asset requests the server answered (in-process server
only), the bytes the fetch counted, and one digest of every cached raster's pixels (equal digests: the
same cache entries, whatever reader made them). Run it at two commits to compare two readers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pytest_httpserver import HTTPServer

from pipeline.aoi import load_aoi, write_aoi
from pipeline.config import DownloadConfig
from pipeline.count import BANDS
from pipeline.lab.simulate import simulate
from pipeline.sources.cache import SceneCache
from pipeline.sources.http import Http
from pipeline.sources.loading import SCL
from pipeline.sources.stac_api import StacApiSource
from tests.stac_api_double import StacApiDouble


def pixel_digest(cache_dir: Path) -> str:
    h = hashlib.sha256()
    for tif in sorted(cache_dir.rglob("*.tif")):
        with rasterio.open(tif) as src:
            h.update(str(tif.relative_to(cache_dir)).encode())
            h.update(np.ascontiguousarray(src.read()).tobytes())
            h.update(str((src.crs, tuple(src.transform), src.nodata)).encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-km", type=float, default=3.0)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 80.0])
    ap.add_argument(
        "--window-km",
        type=float,
        default=1.0,
        help="fetch a centred AOI this wide (0: the whole "
        "simulated AOI), so a window of each file is read, as from a real 110 km tile",
    )
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_fetch"))
    ap.add_argument(
        "--server-process",
        action="store_true",
        help="serve from a process of its own, as a real archive is (the in-process server shares the GIL "
        "with the fetch's threads); the requests are then not counted",
    )
    a = ap.parse_args()
    work = Path(a.work)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sim = simulate(
        work / f"sim{a.size_km:g}",
        seed=1,
        size_km=a.size_km,
        start_year=2022,
        end_year=2022,
        revisit_days=30,
        reuse=True,
    )
    aoi = load_aoi(sim.aoi)
    if a.window_km:
        c = aoi.geometry.centroid
        half = a.window_km / 2 / 111.0
        aoi = load_aoi(
            write_aoi(work / "window.geojson", shapely.box(c.x - half, c.y - half, c.x + half, c.y + half), "window")
        )
    bands = [*BANDS, SCL]
    for latency in a.latency_ms:
        for rep in range(a.repeat):
            # a new server (a new port, so new URLs) each time: GDAL keeps what it read of a URL for the
            # life of the process, and a second fetch of the same URLs would be served from memory
            with served(sim.catalog, latency, a.server_process) as (url, api):
                found = StacApiSource("earth-search", url).search(aoi.geometry, sim.start, sim.end, 100)
                if latency == a.latency_ms[0] and rep == 0:
                    print(
                        f"{len(found.scenes)} scenes x {len(bands)} bands + {len(found.dem)} DEM, {a.size_km:g} km "
                        f"scenes, {a.window_km or a.size_km:g} km AOI, concurrency {a.concurrency}"
                    )
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                http = Http(DownloadConfig(timeout_s=30, retries=2, backoff_s=0.01))
                t0 = time.perf_counter()
                report = SceneCache(cache, aoi.grid).fetch(found, bands, http, concurrency=a.concurrency)
                dt = time.perf_counter() - t0
                assert not report.failed, report.failed
                requests = f"{len(api.requests_for('/files/')):4d}" if api else " n/a"
                print(
                    f"latency {latency:4.0f} ms  run {rep + 1}: {dt:6.2f} s  {requests} asset requests  "
                    f"{report.http['bytes']:9d} bytes counted  pixels {pixel_digest(cache)}"
                )


@contextlib.contextmanager
def served(catalog, latency_ms: float, own_process: bool):
    """The loopback API on a new port: (its URL, the double, or None when it runs in a process of its own)."""
    if own_process:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        double = Path(__file__).with_name("stac_api_double.py")
        cmd = [sys.executable, str(double), str(catalog), "--port", str(port), "--latency-ms", str(latency_ms)]
        proc = subprocess.Popen(
            cmd, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
        )
        try:
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}", None
        finally:
            proc.terminate()
            proc.wait()
        return
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        url = server.url_for("/").rstrip("/")
        api = StacApiDouble(catalog, url)
        api.file_delay_s = latency_ms / 1000
        server.expect_request(re.compile(".*")).respond_with_handler(api)
        yield url, api
    finally:
        server.stop()


if __name__ == "__main__":
    main()
