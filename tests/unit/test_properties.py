"""Property-based: whatever AOI geometry or config values an analyst writes, loading gives either a
usable AOI / run config or a PipelineError with a one-line message, never another exception."""

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.aoi import load_aoi
from pipeline.config import load_config
from pipeline.errors import PipelineError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

coord = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=97.0, max_value=99.0),
    st.floats(min_value=24.0, max_value=27.0),
    st.integers(-1000, 1000_000),
    st.none(),
    st.text(max_size=3),
)
near_kachin = st.tuples(st.floats(min_value=97.9, max_value=98.6), st.floats(min_value=25.4, max_value=26.1))
point = st.one_of(st.lists(coord, min_size=0, max_size=4), near_kachin.map(list))
ring = st.one_of(
    st.lists(point, min_size=0, max_size=8),
    st.lists(near_kachin.map(list), min_size=3, max_size=8).map(lambda r: r + r[:1]),
)
polygon = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "LineString", "polygon"]),
        "coordinates": st.one_of(st.lists(ring, max_size=3), ring, st.lists(st.lists(ring, max_size=2), max_size=2)),
    }
)
feature = st.fixed_dictionaries(
    {
        "type": st.just("Feature"),
        "properties": st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)),
        "geometry": st.one_of(polygon, st.none()),
    }
)
document = st.one_of(
    polygon,
    st.fixed_dictionaries({"type": st.just("FeatureCollection"), "features": st.lists(feature, max_size=3)}),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=5),
    st.none(),
)


def _check(load, *args):
    try:
        return load(*args)
    except PipelineError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg, msg
        return None


@SETTINGS
@given(doc=document)
@example(
    doc={
        "type": "FeatureCollection",
        "features": [  # GEOS's message for it ends in a newline
            {"type": "Feature", "properties": None, "geometry": {"type": "LineString", "coordinates": [[98.0, 26.0]]}}
        ],
    }
)
def test_any_geojson_is_an_aoi_or_one_clear_error(tmp_path, doc):
    p = tmp_path / "aoi.geojson"
    p.write_text(json.dumps(doc, allow_nan=True))
    aoi = _check(load_aoi, p)
    if aoi is not None:
        assert aoi.geometry.is_valid and aoi.area_km2 > 0 and min(aoi.grid.shape.yx) >= 1
        assert aoi.crs.to_epsg() in range(32601, 32761)


@SETTINGS
@given(
    lon=st.floats(min_value=-179.0, max_value=178.9),
    lat=st.floats(min_value=-80.0, max_value=80.0),
    w=st.floats(min_value=1e-9, max_value=3.0),
    h=st.floats(min_value=1e-9, max_value=3.0),
)
def test_any_rectangle_anywhere_is_an_aoi_or_one_clear_error(tmp_path, lon, lat, w, h):
    ring = [[lon, lat], [lon + w, lat], [lon + w, lat + h], [lon, lat + h], [lon, lat]]
    p = tmp_path / "aoi.geojson"
    p.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    aoi = _check(load_aoi, p)
    if aoi is not None:
        # one UTM zone, and the grid covers the rectangle
        assert math.floor((lon + 180) / 6) == math.floor((lon + w + 180) / 6), (lon, w)
        assert aoi.geometry.area > 0


value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-5, 20), max_size=4),
    st.dates().map(str),
    st.just("2021-02-30"),
    st.just({"x": 1}),
)
key = st.sampled_from(
    [
        "period.start",
        "period.end",
        "compute.chunk_px",
        "compute.workers",
        "compute.scheduler",
        "ponds.mndwi_min",
        "ponds.min_months_seen",
        "mask.invalid_scl",
        "mask.cloud_buffer_px",
        "source.kind",
        "source.max_cloud_cover",
        "cache.verify",
        "resolution",
        "sites.linkage_m",
        "change.persistence",
        "clearings.min_bare_share",
        "name",
        "out",
        "ponds",
        "nope.key",
        "download.retries",
        "compute.onset_chunk_cells",
    ]
)


@SETTINGS
@given(overrides=st.dictionaries(key, value, max_size=4))
def test_any_config_values_give_a_config_or_one_clear_error(tmp_path, overrides):
    base = {"aoi": str(tmp_path / "a.geojson"), "period.start": "2021-01-01", "period.end": "2021-12-31"}
    cfg = _check(load_config, None, {**base, **overrides})
    if cfg is not None:
        assert cfg.period.start <= cfg.period.end and cfg.compute.chunk_px >= 64


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_yaml_file_gives_a_config_or_one_clear_error(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    _check(load_config, p, None)
