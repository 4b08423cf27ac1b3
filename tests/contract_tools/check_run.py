#!/usr/bin/env python3
# Copied from /work/shared/tools/check_run.py (shared/tools/ beside the repository); tests use it when shared/ is absent.
"""Checks a run directory against the output contract (DESIGN.md, contract 4).

    python ../shared/tools/check_run.py outputs/demo

Prints one line per problem and exits 1 if there is any; prints a one-line summary and exits 0 otherwise.
Needs geopandas and pandas (run it with the project's .venv/bin/python).
"""

import json
import os
import sys

import geopandas as gpd
import pandas as pd

LAYERS = {
    "ponds": ["pond_id", "first_year", "area_m2", "site_id"],
    "clearings": ["clearing_id", "first_year", "area_m2", "mean_slope_deg", "site_id"],
    "sites": ["site_id", "first_year", "last_year", "n_ponds", "pond_area_m2", "cleared_area_m2", "footprint_m2"],
}
SUMMARY = [
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
]


def main(run):
    problems = []
    gpkg = os.path.join(run, "footprints.gpkg")
    counts = {}
    if not os.path.isfile(gpkg):
        problems.append(f"missing {gpkg}")
    else:
        for layer, cols in LAYERS.items():
            try:
                g = gpd.read_file(gpkg, layer=layer)
            except Exception as e:  # noqa: BLE001 - report any read failure as a contract problem
                problems.append(f"{layer}: cannot read layer ({e})")
                continue
            counts[layer] = len(g)
            missing = [c for c in cols if c not in g.columns]
            if missing:
                problems.append(f"{layer}: missing columns {missing}")
            if g.crs is None:
                problems.append(f"{layer}: no CRS declared")
            elif not g.crs.is_projected:
                problems.append(f"{layer}: CRS {g.crs.to_string()} is not projected (contract: the AOI's UTM zone)")
            if len(g) and not g.geometry.is_valid.all():
                problems.append(f"{layer}: {(~g.geometry.is_valid).sum()} invalid geometries")
            if len(g) and "area_m2" in g and g.crs is not None and g.crs.is_projected:
                err = (g["area_m2"] - g.geometry.area).abs() / g.geometry.area.clip(lower=1)
                if (err > 0.01).any():
                    problems.append(
                        f"{layer}: area_m2 differs from the geometry's area by >1% in {(err > 0.01).sum()} rows"
                    )
        if counts.get("sites") and counts.get("ponds") is not None:
            s = gpd.read_file(gpkg, layer="sites")
            p = gpd.read_file(gpkg, layer="ponds")
            if "site_id" in p and "site_id" in s and not set(p["site_id"].dropna()).issubset(set(s["site_id"])):
                problems.append("ponds: site_id values that no site has")
    csv = os.path.join(run, "yearly_summary.csv")
    if not os.path.isfile(csv):
        problems.append(f"missing {csv}")
    else:
        y = pd.read_csv(csv)
        missing = [c for c in SUMMARY if c not in y.columns]
        if missing:
            problems.append(f"yearly_summary.csv: missing columns {missing}")
        if "sites_total" in y and "aoi" in y:
            for aoi, g in y.sort_values("year").groupby("aoi"):
                if (g["sites_total"].diff().dropna() < 0).any():
                    problems.append(f"yearly_summary.csv: sites_total decreases for {aoi} (it is cumulative)")
    man = os.path.join(run, "run.json")
    if not os.path.isfile(man):
        problems.append(f"missing {man}")
    else:
        try:
            json.load(open(man))
        except ValueError as e:
            problems.append(f"run.json: not JSON ({e})")
    for p in problems:
        print(p)
    if not problems:
        print(f"ok: {run} meets contract 4 ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
