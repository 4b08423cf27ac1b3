"""Would a country boundary do to clip the AOIs at the China border? Counts the shipped real labels that a
boundary puts outside Myanmar, and the share of each AOI inside it.

    python -m pipeline.lab.border_check countries-10m.json

``countries-10m.json``: Natural Earth's admin-0 countries (1:10m), e.g. from the npm package
``world-atlas@2`` (``npm pack world-atlas@2.0.2``), or any file GDAL reads with a ``name`` field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.aoi import load_aoi
from pipeline.reference import LABELS_DIR, POOLS

REPO = Path(__file__).resolve().parents[2]


def myanmar(boundaries: Path) -> shapely.Geometry:
    countries = (
        gpd.read_file(boundaries, layer="countries") if boundaries.suffix == ".json" else gpd.read_file(boundaries)
    )
    mm = countries[countries["name"].isin(["Myanmar", "Burma"])]
    if mm.empty:
        raise SystemExit(f"{boundaries} has no feature named Myanmar: pass Natural Earth's admin-0 countries")
    return shapely.union_all(mm.geometry.values)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("boundaries", type=Path)
    a = ap.parse_args(argv)
    country = myanmar(a.boundaries)
    pools = pd.read_csv(LABELS_DIR / POOLS)
    points = gpd.GeoSeries(gpd.points_from_xy(pools["x"], pools["y"]), crs=4326)
    outside = points[~points.within(country)]
    line = gpd.GeoSeries([country.boundary], crs=4326).to_crs(32647).iloc[0]
    beyond = max((p.distance(line) for p in outside.to_crs(32647)), default=0.0)
    share = len(outside) / len(points)
    print(f"mapped pools outside Myanmar: {len(outside)} of {len(points)} ({share:.1%}), up to {beyond / 1000:.1f} km")
    mines = gpd.read_file(LABELS_DIR / "myanmar_positives.geojson")
    print(f"mine points outside Myanmar: {(~mines.within(country)).mean():.1%} of {len(mines)}")
    for f in sorted((REPO / "aois").glob("*.geojson")):
        aoi = load_aoi(f)
        print(f"{f.stem:16s} inside Myanmar: {aoi.geometry.intersection(country).area / aoi.geometry.area:.0%}")


if __name__ == "__main__":
    main()
