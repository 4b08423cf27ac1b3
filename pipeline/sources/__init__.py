"""Scene sources: each finds Sentinel-2 L2A scenes for an AOI and period, and loads them lazily.

All sources hand back pystac Items shaped like Earth Search v1 and share one loader
(``loading.load_reflectance``), so every stage after the search is the same whatever the source.
"""
from __future__ import annotations

from pipeline.config import SourceConfig
from pipeline.errors import ConfigError
from pipeline.sources.base import SceneSearch, Source
from pipeline.sources.local_stac import LocalCatalogSource


def make_source(cfg: SourceConfig) -> Source:
    if cfg.kind == "local":
        if cfg.catalog is None:
            raise ConfigError("source 'local' needs a catalog: pass --catalog DIR/catalog.json or set source.catalog")
        return LocalCatalogSource(cfg.catalog)
    raise ConfigError(f"source '{cfg.kind}' is not available in this version: use --source local with --catalog")


__all__ = ["Source", "SceneSearch", "make_source", "LocalCatalogSource"]
