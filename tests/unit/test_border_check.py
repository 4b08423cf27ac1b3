"""The border check counts the labels a boundary puts outside Myanmar."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.lab import border_check
from pipeline.reference import LABELS_DIR, POOLS


def test_the_labels_beyond_a_boundary_are_counted(tmp_path, capsys):
    pools = pd.read_csv(LABELS_DIR / POOLS)
    split = float(pools["x"].median())  # a "border" through the middle of the pond field
    countries = gpd.GeoDataFrame(
        {"name": ["Myanmar", "China"]},
        geometry=[shapely.box(90, 10, split, 30), shapely.box(split, 10, 110, 30)],
        crs=4326,
    )
    path = tmp_path / "countries.geojson"
    countries.to_file(path)
    border_check.main([str(path)])
    out = capsys.readouterr().out
    beyond = int((pools["x"] >= split).sum())  # a point on the line is not within Myanmar
    assert f"mapped pools outside Myanmar: {beyond} of {len(pools)}" in out
    assert "chipwe_pangwa" in out and "inside Myanmar" in out
