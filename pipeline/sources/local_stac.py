"""A local STAC catalog laid out like Earth Search v1 (contract 3): an offline mirror or the simulator."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pystac
import shapely
from pystac.stac_io import DefaultStacIO

from pipeline.errors import NoScenesError, SourceError
from pipeline.sources.base import DEM_COLLECTION, SceneSearch, deduplicate, item_datetime, period_bounds

log = logging.getLogger(__name__)


class _CurrentItemsIO(DefaultStacIO):
    """pystac's file reader, but an item already at pystac's STAC version is taken as written: pystac's
    migration deep-copies every item's dict to update its extensions' schemas (projection 1.1 to 2.0 adds
    ``proj:code`` beside ``proj:epsg``; ``base.item_epsg`` reads either), half of reading a catalog (43 of
    106 ms for the bench AOI's 73 items, on the way to the first scene read). Items of older STAC versions
    are migrated as before."""

    def stac_object_from_dict(self, d, href=None, root=None, preserve_dict: bool = True):
        if d.get("type") == "Feature" and d.get("stac_version") == pystac.get_stac_version():
            return pystac.Item.from_dict(
                d, href=None if href is None else str(href), root=root, migrate=False, preserve_dict=preserve_dict
            )
        return super().stac_object_from_dict(d, href, root, preserve_dict)


class LocalCatalogSource:
    name = "local"

    def __init__(self, catalog: str | Path):
        self.path = Path(catalog)
        if self.path.is_dir():
            self.path = self.path / "catalog.json"

    def _items(self) -> list[pystac.Item]:
        if not self.path.is_file():
            raise SourceError(f"catalog {self.path} does not exist: pass the catalog.json of a local STAC catalog")
        try:
            root = pystac.read_file(str(self.path), stac_io=_CurrentItemsIO())
        except Exception as e:  # noqa: BLE001 - pystac raises many kinds for a bad file
            raise SourceError(f"catalog {self.path} is not a readable STAC catalog ({e}): check the file") from None
        if isinstance(root, pystac.Item):
            items = [root]
        elif isinstance(root, pystac.Catalog):
            try:
                items = list(root.get_items(recursive=True))
            except Exception as e:  # noqa: BLE001
                raise SourceError(
                    f"catalog {self.path} links an item that cannot be read ({e}): check the catalog"
                ) from None
        else:
            raise SourceError(f"{self.path} is a {type(root).__name__}, not a STAC Catalog or Collection")
        for it in items:
            it.make_asset_hrefs_absolute()
        return items

    def search(self, aoi_wgs84, start: date, end: date, max_cloud_cover: float) -> SceneSearch:
        items = self._items()
        t0, t1 = period_bounds(start, end)
        s2, dem, skipped = [], [], []
        footprints = []
        seen: set[str] = set()
        for it in items:
            # an id names one acquisition: a catalog that holds it twice (a merge of two mirrors) would
            # count that view twice, so the first one listed is kept
            if it.id in seen:
                skipped.append({"id": it.id, "reason": "duplicate item id: the first one in the catalog is used"})
                continue
            seen.add(it.id)
            if it.geometry is None:
                skipped.append({"id": it.id, "reason": "item has no geometry"})
                continue
            geom = shapely.geometry.shape(it.geometry)
            if it.collection_id == DEM_COLLECTION or "data" in it.assets and "scl" not in it.assets:
                if geom.intersects(aoi_wgs84):
                    dem.append(it)
                continue
            footprints.append(geom)
            if not geom.intersects(aoi_wgs84):
                continue
            when = item_datetime(it)
            if not (t0 <= when <= t1):
                continue
            cc = it.properties.get("eo:cloud_cover")
            if cc is not None and cc > max_cloud_cover:
                skipped.append({"id": it.id, "reason": f"eo:cloud_cover {cc:.0f}% above {max_cloud_cover:.0f}%"})
                continue
            s2.append(it)
        if not footprints:
            raise NoScenesError(f"catalog {self.path} holds no Sentinel-2 items: check it is a sentinel-2-l2a catalog")
        if not s2:
            covers = shapely.union_all(footprints)
            if not covers.intersects(aoi_wgs84):
                b = ", ".join(f"{v:.3f}" for v in covers.bounds)
                raise NoScenesError(
                    f"the AOI lies outside every scene of {self.path} (scenes cover lon/lat {b}): "
                    "use an AOI inside the catalog or a catalog of that area"
                )
            raise NoScenesError(
                f"no scene in {self.path} for {start}..{end} under {max_cloud_cover:.0f}% cloud: "
                "widen the period or raise source.max_cloud_cover"
            )
        s2, duplicates = deduplicate(s2, aoi_wgs84)
        skipped += duplicates
        log.info("local catalog: %d scenes, %d DEM items, %d skipped", len(s2), len(dem), len(skipped))
        return SceneSearch(scenes=s2, dem=dem, skipped=skipped)
