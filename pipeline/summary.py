"""The yearly table: new and cumulative sites, ponds and footprint per AOI and year."""
from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.aoi import area_m2

COLUMNS = ["aoi", "year", "sites_new", "sites_total", "ponds_new", "ponds_total", "pond_area_m2",
           "cleared_area_new_m2", "footprint_total_m2", "valid_observations", "provisional", "gap"]
# In a year with no clear observation nothing can be seen to start: its "new" counts are unknown (blank
# in the CSV), not zero, and what started in it is counted in the next year with a clear view.
NEW_IN_YEAR = ("sites_new", "ponds_new", "cleared_area_new_m2")


def union_area_m2(geoms: gpd.GeoSeries) -> float:
    if geoms.empty:
        return 0.0
    return float(area_m2(gpd.GeoSeries([shapely.union_all(geoms.values)], crs=geoms.crs)).iloc[0])


def yearly_summary(aoi: str, years: list[int], ponds: gpd.GeoDataFrame, clearings: gpd.GeoDataFrame,
                   sites: gpd.GeoDataFrame, valid_observations: dict[int, int], period_end: date,
                   today: date | None = None) -> pd.DataFrame:
    """One row per year. Totals are cumulative to the end of the year; a year is provisional when
    the period stops before its end or it is not over yet (a monthly run will revisit it). A year
    without a clear observation is a ``gap``: its new counts are blank, never zero."""
    today = today or date.today()
    footprint = pd.concat([ponds.geometry, clearings.geometry], ignore_index=True)
    footprint_year = np.concatenate([ponds["first_year"].values, clearings["first_year"].values])
    rows = []
    for y in years:
        rows.append({
            "aoi": aoi, "year": y,
            "sites_new": int((sites["first_year"] == y).sum()),
            "sites_total": int((sites["first_year"] <= y).sum()),
            "ponds_new": int((ponds["first_year"] == y).sum()),
            "ponds_total": int((ponds["first_year"] <= y).sum()),
            "pond_area_m2": round(float(ponds.loc[ponds["first_year"] <= y, "area_m2"].sum()), 1),
            "cleared_area_new_m2": round(float(clearings.loc[clearings["first_year"] == y, "area_m2"].sum()), 1),
            "footprint_total_m2": round(union_area_m2(gpd.GeoSeries(footprint[footprint_year <= y].values,
                                                                    crs=ponds.crs or clearings.crs)), 1),
            "valid_observations": int(valid_observations.get(y, 0)),
            "provisional": bool(period_end < date(y, 12, 31) or today <= date(y, 12, 31)),
            "gap": int(valid_observations.get(y, 0)) == 0,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["sites_new"] = table["sites_new"].astype("Int64")
    table["ponds_new"] = table["ponds_new"].astype("Int64")
    table.loc[table["gap"], list(NEW_IN_YEAR)] = pd.NA
    return table
