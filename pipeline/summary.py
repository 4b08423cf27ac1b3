"""The yearly table: new and cumulative sites, ponds and footprint per AOI and year."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import pandas as pd
import shapely

from pipeline.aoi import area_m2

COLUMNS = [
    "aoi",
    "year",
    "sites_new",
    "sites_total",
    "ponds_new",
    "ponds_total",
    "pond_area_m2",
    "cleared_area_new_m2",
    "footprint_total_m2",
    "valid_observations",
    "provisional",
    "gap",
]
# In a year with no clear observation nothing can be seen to start: its "new" counts are unknown (blank
# in the CSV), not zero, and what started in it is counted in the next year with a clear view.
NEW_IN_YEAR = ("sites_new", "ponds_new", "cleared_area_new_m2")


def footprint_to_year(ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame, years: list[int]) -> dict[int, float]:
    """Area (m2) of the union of the ponds and clearings that started by the end of each of ``years``.

    No two ponds overlap, nor two clearings (each layer is the polygons of one label raster), so the
    union's area is the two layers' areas less the overlaps of the pond and clearing pairs that meet: an
    overlay of those few pairs, not a union of every polygon (which had been a fifth of vectorising)."""
    p, c = ponds.geometry, clearings.geometry
    pi, ci = c.sindex.query(p.values, predicate="intersects")
    meet = area_m2(gpd.GeoSeries(shapely.intersection(p.values[pi], c.values[ci]), crs=p.crs)).to_numpy()
    area_p, area_c = area_m2(p).to_numpy(), area_m2(c).to_numpy()
    fp, fc = ponds["first_year"].to_numpy(), clearings["first_year"].to_numpy()
    return {
        y: float(area_p[fp <= y].sum() + area_c[fc <= y].sum() - meet[(fp[pi] <= y) & (fc[ci] <= y)].sum())
        for y in years
    }


def yearly_summary(
    aoi: str,
    years: list[int],
    ponds: gpd.GeoDataFrame,
    clearings: gpd.GeoDataFrame,
    sites: gpd.GeoDataFrame,
    valid_observations: dict[int, int],
    period_end: date,
    today: date | None = None,
) -> pd.DataFrame:
    """One row per year. Totals are cumulative to the end of the year; a year is provisional when
    the period stops before its end or it is not over yet (a monthly run will revisit it). A year
    without a clear observation is a ``gap``: its new counts are blank, never zero."""
    today = today or date.today()
    footprint = footprint_to_year(ponds, clearings, years)
    rows = []
    for y in years:
        rows.append(
            {
                "aoi": aoi,
                "year": y,
                "sites_new": int((sites["first_year"] == y).sum()),
                "sites_total": int((sites["first_year"] <= y).sum()),
                "ponds_new": int((ponds["first_year"] == y).sum()),
                "ponds_total": int((ponds["first_year"] <= y).sum()),
                "pond_area_m2": round(float(ponds.loc[ponds["first_year"] <= y, "area_m2"].sum()), 1),
                "cleared_area_new_m2": round(float(clearings.loc[clearings["first_year"] == y, "area_m2"].sum()), 1),
                "footprint_total_m2": round(footprint[y], 1),
                "valid_observations": int(valid_observations.get(y, 0)),
                "provisional": bool(period_end < date(y, 12, 31) or today <= date(y, 12, 31)),
                "gap": int(valid_observations.get(y, 0)) == 0,
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["sites_new"] = table["sites_new"].astype("Int64")
    table["ponds_new"] = table["ponds_new"].astype("Int64")
    table.loc[table["gap"], list(NEW_IN_YEAR)] = pd.NA
    return table
