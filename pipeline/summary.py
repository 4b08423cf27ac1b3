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
    # added with the site register: after the columns of contract 4, so readers by position still work
    "sites_reviewed_total",
    "sites_confirmed_total",
    "sites_rejected_total",
]
# an analyst's verdict on a site (the site register's ``review``): rejected sites leave the counts
REVIEW_STATUSES = ("unreviewed", "confirmed", "rejected", "uncertain")
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
    without a clear observation is a ``gap``: its new counts are blank, never zero.

    Sites an analyst rejected (``review``), and their ponds and clearings, are left out of every count
    and area but their own column; ``sites_reviewed_total`` counts the confirmed and uncertain sites,
    i.e. the total without the unreviewed ones."""
    today = today or date.today()
    review = sites["review"] if "review" in sites else pd.Series("unreviewed", index=sites.index)
    rejected = sites[review == "rejected"]
    sites, review = sites[review != "rejected"], review[review != "rejected"]
    ponds = ponds[~ponds["site_id"].isin(rejected["site_id"])]
    clearings = clearings[~clearings["site_id"].isin(rejected["site_id"])]
    footprint = footprint_to_year(ponds, clearings, years)
    rows = []
    for y in years:
        rows.append(
            {
                "aoi": aoi,
                "year": y,
                "sites_new": int((sites["first_year"] == y).sum()),
                "sites_total": int((sites["first_year"] <= y).sum()),
                "sites_reviewed_total": int(((sites["first_year"] <= y) & (review != "unreviewed")).sum()),
                "sites_confirmed_total": int(((sites["first_year"] <= y) & (review == "confirmed")).sum()),
                "sites_rejected_total": int((rejected["first_year"] <= y).sum()),
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


CHANGE_COLUMNS = [
    "site_id",
    "change",
    "related",
    "first_year",
    "n_ponds",
    "new_ponds",
    "footprint_m2",
    "footprint_change_pct",
    "review",
    "review_before",
    "note",
]
CHANGE_KINDS = ("new", "split", "grown", "redetected", "merged", "quiet", "verdict")


def _change_kinds(a: dict, b: dict | None, grown_pct: float) -> list[tuple[str, str, str]]:
    """(change, related ids, note) of one register site between the registers before (``b``) and after
    (``a``) a run."""
    if b is None:
        return [("split", a["parents"], f"split off site {a['parents']}") if a["parents"] else ("new", "", "")]
    out = []
    if a["status"] == "merged" and b["status"] != "merged":
        out.append(("merged", str(a["merged_into"]), f"merged into site {a['merged_into']}"))
    elif a["status"] == "quiet" and b["status"] == "active":
        out.append(("quiet", "", "not detected in this run"))
    elif a["status"] == "active" and b["status"] == "quiet":
        out.append(("redetected", "", "detected again after a run without it"))
    elif a["status"] == "active" and (
        a["n_ponds"] > b["n_ponds"] or a["footprint_m2"] > b["footprint_m2"] * (1 + grown_pct / 100)
    ):
        out.append(("grown", "", ""))
    if a["review"] != b["review_at_last_run"]:
        out.append(("verdict", "", f"{b['review_at_last_run']} -> {a['review']}"))
    return out


def site_changes(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, grown_pct: float) -> gpd.GeoDataFrame:
    """What changed between two states of the site register, one row per site and change, register ids:
    new sites (and sites split off others), grown ones (footprint up by more than ``grown_pct`` % or more
    ponds), sites merged into others, gone quiet or detected again, and verdicts changed since the last run."""
    old = {int(r["site_id"]): r for r in before.drop(columns="geometry").to_dict("records")}
    rows = []
    for a, geom in zip(after.drop(columns="geometry").to_dict("records"), after.geometry.values):
        b = old.get(int(a["site_id"]))
        for change, related, note in _change_kinds(a, b, grown_pct):
            rows.append(
                {
                    "site_id": int(a["site_id"]),
                    "change": change,
                    "related": related,
                    "first_year": int(a["first_year"]),
                    "n_ponds": int(a["n_ponds"]),
                    "new_ponds": int(a["n_ponds"] - (b["n_ponds"] if b else 0)),
                    "footprint_m2": round(float(a["footprint_m2"]), 1),
                    "footprint_change_pct": round(100 * (a["footprint_m2"] / b["footprint_m2"] - 1), 1)
                    if b and b["footprint_m2"] > 0
                    else None,
                    "review": a["review"],
                    "review_before": b["review_at_last_run"] if b else "",
                    "note": note,
                    "geometry": geom,
                }
            )
    table = gpd.GeoDataFrame(rows, columns=[*CHANGE_COLUMNS, "geometry"], geometry="geometry", crs=after.crs)
    rank = {k: i for i, k in enumerate(CHANGE_KINDS)}
    return table.sort_values(["change", "site_id"], key=lambda s: s.map(rank) if s.name == "change" else s).reset_index(
        drop=True
    )
