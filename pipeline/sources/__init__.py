"""Scene sources: each finds Sentinel-2 L2A scenes for an AOI and period, and loads them lazily.

All sources hand back pystac Items shaped like Earth Search v1 and share one reader
(``pipeline.sources.loading``), so every stage after the search is the same whatever the source.
The online sources go one step further: ``find_scenes`` fetches what they found into the scene
cache (clipped to the AOI grid) and hands back the cache's local catalog, so a run on Earth Search
reads exactly the files an offline re-run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pipeline.config import DownloadConfig, RunConfig, SourceConfig
from pipeline.errors import ConfigError
from pipeline.sources.base import SceneSearch, Source
from pipeline.sources.local_stac import LocalCatalogSource
from pipeline.sources.sentinelhub import SentinelHubSource
from pipeline.sources.stac_api import StacApiSource

ONLINE = ("earth-search", "planetary-computer")


def make_source(cfg: SourceConfig, download: DownloadConfig | None = None) -> Source:
    if cfg.kind == "local":
        if cfg.catalog is None:
            raise ConfigError("source 'local' needs a catalog: pass --catalog DIR/catalog.json or set source.catalog")
        return LocalCatalogSource(cfg.catalog)
    if cfg.kind in ONLINE:
        return StacApiSource(cfg.kind, cfg.stac_url, cfg.collection, cfg.dem_collection, download)
    if cfg.kind == "sentinelhub":
        return SentinelHubSource(cfg.sh_base_url, cfg.sh_token_url, cfg.collection, bool(cfg.dem_collection), download)
    raise ConfigError(
        f"source '{cfg.kind}' is not available in this version: use --source earth-search, "
        "planetary-computer, sentinelhub or local"
    )


@dataclass
class Found:
    """Scenes ready for the local loader, and what it took to get them."""

    search: SceneSearch
    source: str
    fetch: dict | None = None  # the cache's report, for the online sources


def find_scenes(
    cfg: RunConfig, aoi, bands: list[str], progress=None, start: date | None = None, end: date | None = None
) -> Found:
    """Search the configured source; for an online source fetch into the cache, then search the cache."""
    start, end = start or cfg.period.start, end or cfg.period.end
    cc = cfg.source.max_cloud_cover
    if cfg.source.kind == "local" and not cfg.cache.offline:
        src = make_source(cfg.source)
        return Found(src.search(aoi.geometry, start, end, cc), src.name)
    from pipeline.sources.cache import SceneCache
    from pipeline.sources.http import Http

    cache = SceneCache(cfg.cache.dir, aoi.grid, cfg.cache.verify)
    if cfg.cache.offline:
        catalog = cache.catalog_for_offline()
        found = LocalCatalogSource(catalog).search(aoi.geometry, start, end, cc)
        return Found(found, f"{cfg.source.kind} (offline, cache)", {"catalog": str(catalog), "offline": True})
    src = make_source(cfg.source, cfg.download)
    if isinstance(src, SentinelHubSource):
        src.grid = aoi.grid  # Sentinel Hub renders onto the AOI grid rather than serving files
    remote = src.search(aoi.geometry, start, end, cc)
    http = Http(cfg.download, progress=progress)
    report = cache.fetch(
        remote,
        bands,
        http,
        cfg.download.concurrency,
        getattr(src, "sign", None),
        progress,
        getattr(src, "render", None),
    )
    local = LocalCatalogSource(report.catalog).search(aoi.geometry, start, end, cc)
    # only what this search found: the cache may hold scenes of other periods or of older searches
    wanted = {it.id for it in remote.scenes}
    local.scenes = [it for it in local.scenes if it.id in wanted]
    local.skipped = [*remote.skipped, *report.failed, *[s for s in local.skipped if s["id"] in wanted]]
    return Found(local, src.name, report.as_dict())


__all__ = ["Source", "SceneSearch", "make_source", "find_scenes", "LocalCatalogSource", "ONLINE"]
