"""Against the real services: skipped unless ``pytest --live`` (needs the internet).

They check that the public APIs still answer the way the loopback doubles do: item layout, asset
keys, the offset, and one clipped asset fetched into the cache.
"""

from __future__ import annotations

from datetime import date

import pytest
import shapely

from pipeline.aoi import load_aoi
from pipeline.sources.cache import SceneCache
from pipeline.sources.http import Http
from pipeline.sources.stac_api import StacApiSource

pytestmark = pytest.mark.live
# 1 km around Pang War, 2024 dry season
AOI_LONLAT = shapely.box(98.36, 25.72, 98.37, 25.73)


@pytest.mark.parametrize("kind", ["earth-search", "planetary-computer"])
def test_real_search_and_one_asset(kind, tmp_path):
    import json

    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {"type": "Feature", "properties": {"name": "pangwar"}, "geometry": shapely.geometry.mapping(AOI_LONLAT)}
        )
    )
    aoi = load_aoi(path)
    src = StacApiSource(kind, None)
    found = src.search(aoi.geometry, date(2024, 1, 1), date(2024, 2, 28), 30)
    assert found.scenes and found.dem
    it = found.scenes[0]
    assert {"blue", "red", "nir", "swir16", "scl"} <= set(it.assets)
    from dataclasses import replace

    one = replace(found, scenes=[it], dem=[])
    report = SceneCache(tmp_path / "cache", aoi.grid).fetch(one, ["red", "scl"], Http(), sign=src.sign)
    assert report.failed == [] and report.http["bytes"] > 0
