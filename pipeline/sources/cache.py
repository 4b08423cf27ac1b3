"""The scene cache: what the online sources downloaded, clipped to an AOI grid, as a local catalog.

Layout (one folder per AOI grid, so two AOIs never share or clobber entries)::

    <cache dir>/<grid key>/grid.json                  the grid this folder serves
    <cache dir>/<grid key>/catalog.json               contract-3 catalog of every complete scene
    <cache dir>/<grid key>/<collection>/<item id>/<asset>.tif        clipped GeoTIFF (COG layout)
    <cache dir>/<grid key>/<collection>/<item id>/<asset>.tif.json   its record: SHA-256, size, source
    <cache dir>/<grid key>/<collection>/<item id>/item.json          the item, hrefs pointing at the clips

Each asset is cut from the remote COG in its own CRS and pixel grid (a window around the AOI with a
margin of a few pixels for the bilinear kernel): no resampling happens at fetch time, so the loader
reprojects the clipped file exactly as it would have the whole remote file, and a run through the
cache gives the same numbers as a run on the full scenes.

Why COG rather than Zarr: one file per scene and band is the contract-3 layout, so the cached
catalog is read by the existing local path with no new loader; each entry is written to a temporary
name and renamed into place, and its record (with the checksum) is written after it, so a killed
download leaves either a complete entry or none; and an entry is checked or dropped on its own.

A scene enters ``catalog.json`` only when ``item.json`` exists, which is written after all its
assets, so an interrupted fetch never exposes half a scene.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.aoi import grid_crs
from pipeline.errors import NoScenesError, SourceError
from pipeline.export import pid_alive, sha256
from pipeline.sources.base import DEM_COLLECTION, S2_COLLECTION, SceneSearch
from pipeline.sources.http import (
    DownloadError,
    Http,
    NoProgress,
    Progress,
    gdal_download_error,
    gdal_http_options,
    redact,
)

log = logging.getLogger(__name__)

# Source pixels kept beyond the AOI grid's bounds on each side: bilinear needs 1, cubic 2; the rest
# absorbs the curvature of the grid's outline when it is drawn in another UTM zone or in lon/lat.
MARGIN_PX = 4
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kachin-ree-watch"


def grid_key(grid: GeoBox) -> str:
    crs = grid_crs(grid)
    desc = json.dumps({"crs": crs.to_wkt(), "affine": list(grid.affine)[:6], "shape": list(grid.shape.yx)})
    res = abs(grid.affine.a)
    return f"epsg{crs.epsg or 'x'}-{res:g}m-{hashlib.sha256(desc.encode()).hexdigest()[:12]}"


class CacheMiss(Exception):
    pass


@dataclass
class FetchReport:
    catalog: Path
    new: list[str] = field(default_factory=list)  # scenes with at least one asset downloaded now
    cached: list[str] = field(default_factory=list)  # scenes wholly served from the cache
    failed: list[dict] = field(default_factory=list)  # {"id", "reason"}: kept failing, skipped
    repaired: list[str] = field(default_factory=list)  # entries found corrupt or partial and fetched again
    http: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "catalog": str(self.catalog),
            "scenes_new": len(self.new),
            "scenes_cached": len(self.cached),
            "scenes_failed": len(self.failed),
            "entries_repaired": self.repaired,
            "new": self.new,
            "failed": self.failed,
            **{f"http_{k}": v for k, v in self.http.items()},
        }


class SceneCache:
    def __init__(self, root: str | Path | None, grid: GeoBox, verify: str = "size"):
        self.root = Path(root) if root else default_cache_dir()
        self.grid = grid
        self.verify = verify
        self.dir = self.root / grid_key(grid)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ entries
    def item_dir(self, item: pystac.Item) -> Path:
        return self.dir / (item.collection_id or S2_COLLECTION) / item.id

    def entry_ok(self, tif: Path) -> str | None:
        """Why a cached asset cannot be trusted, or None."""
        rec = tif.with_name(tif.name + ".json")
        if not tif.is_file() or not rec.is_file():
            return "absent" if not tif.exists() else "no record (interrupted write)"
        try:
            meta = json.loads(rec.read_text())
        except (OSError, ValueError):
            return "record unreadable"
        st = tif.stat()
        if st.st_size != meta.get("bytes"):
            return f"size {st.st_size} != recorded {meta.get('bytes')} (truncated or partial)"
        if self.verify == "checksum" or st.st_mtime_ns != meta.get("mtime_ns"):
            if sha256(tif) != meta.get("sha256"):
                return "checksum mismatch (corrupt)"
        return None

    def scene_complete(self, item_dir: Path) -> bool:
        if not (item_dir / "item.json").is_file():
            return False
        try:
            assets = json.loads((item_dir / "item.json").read_text())["assets"]
        except (OSError, ValueError, KeyError):
            return False
        return all(self.entry_ok(item_dir / Path(a["href"]).name) is None for a in assets.values())

    def _write_entry(self, tif: Path, data: np.ndarray, profile: dict, source_href: str, window: Window) -> dict:
        tif.parent.mkdir(parents=True, exist_ok=True)
        tmp = tif.with_name(f".{tif.name}.partial-{os.getpid()}-{threading.get_ident()}")
        predictor = 3 if data.dtype.kind == "f" else 2
        with rasterio.open(
            tmp,
            "w",
            driver="COG",
            width=data.shape[1],
            height=data.shape[0],
            count=1,
            dtype=data.dtype,
            crs=profile["crs"],
            transform=profile["transform"],
            nodata=profile["nodata"],
            compress="DEFLATE",
            predictor=predictor,
            blocksize=256,
            overviews="NONE",
        ) as dst:
            dst.write(data, 1)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # the record is the commit mark: rename the data first, then write the record atomically
        rec = tif.with_name(tif.name + ".json")
        rec.unlink(missing_ok=True)
        os.replace(tmp, tif)
        st = tif.stat()
        meta = {
            "sha256": sha256(tif),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "source": redact(source_href),
            "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
            "grid": self.dir.name,
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "version": CACHE_VERSION,
        }
        _atomic_write(rec, json.dumps(meta, indent=1))
        return meta

    def clip(self, href: str, tif: Path, http: Http | None = None) -> dict:
        """Cut the AOI window (+ margin) out of one remote or local raster into ``tif``. A remote file is
        read by GDAL's ``/vsicurl/`` (range requests for the header and the tiles under the window)."""
        remote = href.startswith(("http://", "https://"))
        try:
            with rasterio.Env(**gdal_http_options(http, href)):
                data, profile, window = self._window(
                    f"/vsicurl/{href}" if remote else href, href, http if remote else None
                )
        except rasterio.RasterioIOError as e:
            err = gdal_download_error(href, e, http) if remote else None
            if err is None:
                raise
            raise err from None
        meta = self._write_entry(tif, data, profile, href, window)
        return {
            "shape": [int(window.height), int(window.width)],
            "transform": list(profile["transform"])[:6],
            "meta": meta,
        }

    def _window(self, path: str, href: str, http: Http | None) -> tuple[np.ndarray, dict, Window]:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise SourceError(f"{redact(href)} has no CRS")
            left, bottom, right, top = transform_bounds(
                grid_crs(self.grid).to_wkt(), src.crs, *self.grid.boundingbox, densify_pts=21
            )
            inv = ~src.transform
            cols, rows = zip(*[inv * (x, y) for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))])
            c0 = max(0, math.floor(min(cols)) - MARGIN_PX)
            r0 = max(0, math.floor(min(rows)) - MARGIN_PX)
            c1 = min(src.width, math.ceil(max(cols)) + MARGIN_PX)
            r1 = min(src.height, math.ceil(max(rows)) + MARGIN_PX)
            if c1 <= c0 or r1 <= r0:
                raise CacheMiss("the raster does not overlap the AOI grid")
            window = Window(c0, r0, c1 - c0, r1 - r0)
            data = src.read(1, window=window)
            if http is not None:  # GDAL does not say what it transferred: count what the window needed
                nbytes = tile_bytes(src, window)
                http.stats.add(nbytes=nbytes)
                http.progress.add_bytes(nbytes)
            return data, {"crs": src.crs, "transform": src.window_transform(window), "nodata": src.nodata}, window

    # ------------------------------------------------------------------ catalog
    def write_catalog(self) -> Path:
        """Rewrite catalog.json from the complete scenes on disk; returns its path."""
        links = []
        for coll in (S2_COLLECTION, DEM_COLLECTION):
            base = self.dir / coll
            if not base.is_dir():
                continue
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                if self.scene_complete(d):
                    links.append(
                        {"rel": "item", "href": f"./{coll}/{d.name}/item.json", "type": "application/geo+json"}
                    )
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(
            self.dir / "grid.json",
            json.dumps(
                {"crs": str(self.grid.crs), "affine": list(self.grid.affine)[:6], "shape": list(self.grid.shape.yx)},
                indent=1,
            ),
        )
        cat = {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": f"cache-{self.dir.name}",
            "description": "Scenes clipped to one AOI grid by `python -m pipeline fetch` (kachin-ree-watch cache)",
            "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}, *links],
        }
        path = self.dir / "catalog.json"
        _atomic_write(path, json.dumps(cat, indent=1))
        return path

    def n_scenes(self) -> int:
        base = self.dir / S2_COLLECTION
        return sum(1 for d in base.iterdir() if (d / "item.json").is_file()) if base.is_dir() else 0

    # ------------------------------------------------------------------ fetching
    def fetch_item(
        self, item: pystac.Item, assets: list[str], http: Http, sign=None, render=None, clip_pool=None
    ) -> tuple[bool, list[str]]:
        """Bring one item's ``assets`` into the cache. Returns (downloaded anything, entries repaired).
        With ``clip_pool`` (an executor), its assets are clipped side by side in it.

        ``render(item, assets, http)``, for sources that make rasters rather than serve files (Sentinel
        Hub's Process API), returns ``{asset: (array, crs, transform, nodata, source)}`` already on
        the AOI grid; they are written as entries like the clips."""
        d = self.item_dir(item)
        missing = [a for a in assets if a not in item.assets]
        if missing:
            raise CacheMiss(f"missing assets {missing}")
        todo, repaired = [], []
        for a in assets:
            why = self.entry_ok(d / f"{a}.tif")
            if why is not None:
                todo.append(a)
                if why != "absent":
                    repaired.append(f"{item.id}/{a}: {why}")
                    log.warning("cache entry %s/%s: %s; fetching it again", item.id, a, why)
        if not todo and (d / "item.json").is_file():
            return False, []
        clips = {}
        if render is not None:
            for a, (data, crs, transform, nodata, source) in render(item, todo, http).items():
                meta = self._write_entry(
                    d / f"{a}.tif",
                    data,
                    {"crs": crs, "transform": transform, "nodata": nodata},
                    source,
                    Window(0, 0, data.shape[1], data.shape[0]),
                )
                clips[a] = {"shape": list(data.shape), "transform": list(transform)[:6], "meta": meta}
            self._write_item(item, assets, d, clips)
            return bool(todo), repaired
        signed = sign(item) if (sign and todo) else item
        if clip_pool is None:
            clips.update((a, self.clip(signed.assets[a].href, d / f"{a}.tif", http)) for a in todo)
        else:
            futures = [(a, clip_pool.submit(self.clip, signed.assets[a].href, d / f"{a}.tif", http)) for a in todo]
            clips.update((a, f.result()) for a, f in futures)
        self._write_item(item, assets, d, clips)
        return bool(todo), repaired

    def _write_item(self, item: pystac.Item, assets: list[str], d: Path, clips: dict) -> None:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        doc["links"] = []
        old = json.loads((d / "item.json").read_text()) if (d / "item.json").is_file() else {"assets": {}}
        props = doc["properties"]
        for k in ("proj:shape", "proj:transform", "proj:bbox", "proj:geometry", "proj:centroid"):
            props.pop(k, None)  # of the whole granule: the clips say their own
        new_assets = {}
        for a in assets:
            asset = dict(doc["assets"][a])
            asset["href"] = f"./{a}.tif"
            for k in ("alternate", "storage:refs", "file:size", "file:checksum"):
                asset.pop(k, None)
            if a in clips:
                asset["proj:shape"], asset["proj:transform"] = clips[a]["shape"], clips[a]["transform"]
            else:
                prev = old["assets"].get(a, {})
                asset["proj:shape"], asset["proj:transform"] = prev.get("proj:shape"), prev.get("proj:transform")
                if asset["proj:shape"] is None:  # record lost: read the clip's own header
                    with rasterio.open(d / f"{a}.tif") as src:
                        asset["proj:shape"], asset["proj:transform"] = [src.height, src.width], list(src.transform)[:6]
            new_assets[a] = asset
        doc["assets"] = new_assets
        _atomic_write(d / "item.json", json.dumps(doc, indent=1))

    def fetch(
        self,
        found: SceneSearch,
        bands: list[str],
        http: Http,
        concurrency: int = 4,
        sign=None,
        progress: Progress | None = None,
        render=None,
    ) -> FetchReport:
        """Fetch what is not cached yet; a scene that keeps failing is skipped and reported."""
        progress = progress or NoProgress()
        self.remove_orphans()
        report = FetchReport(catalog=self.dir / "catalog.json")
        jobs = [(it, bands) for it in found.scenes] + [(it, ["data"]) for it in found.dem]
        progress.set_scenes(len(jobs))

        def one(job):
            item, assets = job
            try:
                got, repaired = self.fetch_item(item, assets, http, sign, render, clip_pool)
                return item, got, repaired, None
            except CacheMiss as e:
                return item, False, [], str(e)
            except (DownloadError, SourceError) as e:
                return item, False, [], str(e)
            except (rasterio.RasterioIOError, OSError) as e:
                return (
                    item,
                    False,
                    [],
                    f"unreadable ({redact(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]})",
                )
            finally:
                progress.scene_done()

        # a scene's bands are clipped side by side, in threads that last the whole fetch (GDAL keeps its
        # HTTP connections per thread): a distant archive's round trips, not its bandwidth, bound a clip
        # (a header read, then the tiles), so a scene then takes one clip's round trips, not one per band
        with (
            ThreadPoolExecutor(max_workers=concurrency) as pool,
            ThreadPoolExecutor(max_workers=concurrency * len(bands), thread_name_prefix="clip") as clip_pool,
        ):
            for item, got, repaired, err in pool.map(one, jobs):
                if err:
                    log.warning("skipping %s: %s", item.id, err)
                    report.failed.append({"id": item.id, "reason": f"fetch failed: {err}"})
                else:
                    (report.new if got else report.cached).append(item.id)
                    report.repaired += repaired
        report.catalog = self.write_catalog()
        report.http = http.stats.as_dict()
        return report

    def remove_orphans(self) -> int:
        """Delete temporary files left by a fetch that was killed (their process is gone)."""
        n = 0
        if not self.dir.is_dir():
            return 0
        for tmp in self.dir.rglob(".*.partial-*"):
            pid = tmp.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
                n += 1
        return n

    def catalog_for_offline(self) -> Path:
        if not self.dir.is_dir() or self.n_scenes() == 0:
            raise NoScenesError(
                f"the cache {self.dir} holds no scenes for this AOI grid: run "
                "`python -m pipeline fetch` (online) first, or drop --offline"
            )
        return self.write_catalog()


def tile_bytes(src, window: Window) -> int:
    """Compressed bytes of the image tiles (or strips) of band 1 under ``window``, from the TIFF's own
    index: what a range reader must fetch for those pixels, short of the header and of GDAL's
    rounding of ranges to its chunk size (GDAL does not report the bytes it transferred)."""
    bh, bw = src.block_shapes[0]
    total = 0
    for by in range(int(window.row_off) // bh, (int(window.row_off + window.height) - 1) // bh + 1):
        for bx in range(int(window.col_off) // bw, (int(window.col_off + window.width) - 1) // bw + 1):
            total += int(src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1) or 0)
    return total


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
