"""The site register on small layers made in the test: ids that last, splits and merges, verdicts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline import register
from pipeline.errors import ConfigError, OutputError
from pipeline.summary import site_changes, yearly_summary
from tests.support import REPO, subprocess_env

CRS = "EPSG:32647"
X0, Y0 = 400_000.0, 2_850_000.0


def square(x, y, size=20.0):
    return shapely.box(X0 + x, Y0 + y, X0 + x + size, Y0 + y + size)


def run_layers(sites: list[list[tuple]], clearings: list[tuple] = ()):
    """A run's layers, numbered 1..n as a run numbers them: ``sites`` lists each site's ponds as
    (x, y[, size]) in metres from a corner; ``clearings`` (x, y, size, site index)."""
    ponds, site_rows = [], []
    for s, members in enumerate(sites, start=1):
        for m in members:
            ponds.append({"site_id": s, "first_year": 2021, "area_m2": 400.0, "geometry": square(*m)})
    pond_gdf = gpd.GeoDataFrame(ponds, geometry="geometry", crs=CRS)
    pond_gdf.insert(0, "pond_id", np.arange(1, len(pond_gdf) + 1))
    clear = gpd.GeoDataFrame(
        [
            {"site_id": s + 1, "first_year": 2020, "area_m2": size * size, "geometry": square(x, y, size)}
            for x, y, size, s in clearings
        ],
        columns=["site_id", "first_year", "area_m2", "geometry"],
        geometry="geometry",
        crs=CRS,
    )
    clear.insert(0, "clearing_id", np.arange(1, len(clear) + 1))
    for s, members in enumerate(sites, start=1):
        geoms = [square(*m) for m in members]
        site_rows.append(
            {
                "site_id": s,
                "first_year": 2021,
                "last_year": 2024,
                "n_ponds": len(members),
                "footprint_m2": float(shapely.union_all(geoms).area),
                "geometry": shapely.union_all(geoms).convex_hull,
            }
        )
    return pond_gdf, clear, gpd.GeoDataFrame(site_rows, geometry="geometry", crs=CRS)


def one_run(reg, sites, run_id, clearings=(), tolerance=10.0):
    before = reg.sites.copy()
    reg, ponds, clear, out = register.update_register(reg, *run_layers(sites, clearings), run_id, tolerance)
    return reg, ponds, clear, out, site_changes(before, reg.sites, 10.0)


A = [(0, 0), (30, 0), (60, 0)]  # three ponds in a row
B = [(1000, 0), (1030, 0), (1200, 0)]  # linked through a pond or clearing no longer seen
C = [(0, 1000)]


def test_match_ids_keeps_ids_of_what_did_not_move_and_never_reuses_one():
    prev = np.array([4, 9])
    prev_geoms = [square(0, 0, 10), square(500, 0)]
    # the one-pixel pond moved 4 m by misregistration, the other gone, a third new
    ids, parents, absorbed, nxt = register.match_ids(prev, prev_geoms, [square(800, 0), square(4, -3, 10)], 10.0, 12)
    assert ids.tolist() == [12, 4] and nxt == 13
    assert parents == [(), (4,)] and absorbed == {}


def test_a_rerun_keeps_every_id_and_changes_nothing():
    reg = register.empty_register(CRS)
    reg, ponds, _, sites, changes = one_run(reg, [A, B, C], "r1")
    assert changes["change"].tolist() == ["new", "new", "new"]
    reg, ponds2, _, sites2, changes2 = one_run(reg, [A, B, C], "r2")
    assert sites2["site_id"].tolist() == sites["site_id"].tolist() == [1, 2, 3]
    assert ponds2["pond_id"].tolist() == ponds["pond_id"].tolist()
    assert changes2.empty


def test_a_run_in_another_order_keeps_ids_by_place_not_by_number():
    reg, _, _, first, _ = one_run(register.empty_register(CRS), [A, B, C], "r1")
    # the next run numbers the same sites otherwise (another chunking, a new site found first)
    reg, _, _, second, changes = one_run(reg, [[(3000, 3000)], C, B, A], "r2")
    by_place = dict(zip(second.geometry.centroid.x.round(), second["site_id"]))
    assert by_place == {**dict(zip(first.geometry.centroid.x.round(), first["site_id"])), X0 + 3010: 4}
    assert changes[["site_id", "change"]].values.tolist() == [[4, "new"]]


def test_growth_split_merge_quiet_and_back_are_recorded_with_parents():
    reg, *_ = one_run(register.empty_register(CRS), [A, B, C], "r1")
    # A grows by a pond; B splits in two; C not seen
    b_split = [[(1000, 0), (1030, 0)], [(1200, 0)]]
    reg, _, _, sites, changes = one_run(reg, [A + [(90, 0)], *b_split], "r2")
    got = {(r["site_id"], r["change"]) for r in changes.to_dict("records")}
    assert got == {(1, "grown"), (4, "split"), (3, "quiet")}
    # the piece that broke off is new but not new mining: it records where it came from
    row = reg.sites.set_index("site_id").loc[4]
    assert (row["parents"], row["status"]) == ("2", "active")
    # B's two pieces grow together again and C returns
    reg, _, _, sites, changes = one_run(reg, [A + [(90, 0)], [(1000, 0), (1030, 0), (1100, 0), (1200, 0)], C], "r3")
    got = {(r["site_id"], r["change"], r["related"]) for r in changes.to_dict("records")}
    assert got == {(2, "grown", ""), (4, "merged", "2"), (3, "redetected", "")}
    row = reg.sites.set_index("site_id").loc[4]
    assert (row["status"], row["merged_into"]) == ("merged", 2)
    events = reg.events
    assert {"split", "merged", "quiet", "redetected"} <= set(events["event"])
    # nothing is deleted and no id is given twice
    assert sorted(reg.sites["site_id"]) == [1, 2, 3, 4] and reg.next_id["site_id"] == 5
    assert sites["site_id"].tolist() == [1, 2, 3]


def test_a_merge_keeps_the_larger_sites_id_and_its_verdict():
    reg, *_ = one_run(register.empty_register(CRS), [A, [(300, 0)]], "r1")
    reg.sites.loc[reg.sites["site_id"] == 1, list(register.VERDICT)] = ["confirmed", "seen", "ana", "2026-01-01"]
    reg, ponds, _, sites, changes = one_run(reg, [[*A, (150, 0), (300, 0)]], "r2")
    assert sites["site_id"].tolist() == [1] and sites["review"].tolist() == ["confirmed"]
    assert set(ponds["site_id"]) == {1}
    assert [2, "merged", "1"] in changes[["site_id", "change", "related"]].values.tolist()


def test_a_split_of_a_rejected_site_stays_rejected():
    reg, *_ = one_run(register.empty_register(CRS), [A + [(300, 0), (330, 0)]], "r1")
    reg.sites.loc[0, list(register.VERDICT)] = ["rejected", "fish ponds", "ana", "2026-01-01"]
    reg, _, _, sites, _ = one_run(reg, [A, [(300, 0), (330, 0)]], "r2")
    assert sites["review"].tolist() == ["rejected", "rejected"]
    assert sites["site_id"].tolist() == [1, 2]


def test_twenty_monthly_runs_keep_every_verdict(tmp_path):
    """Sites come, grow, split, merge and go quiet for twenty months; every verdict given stays where it was put."""
    path = tmp_path / "aoi.register.gpkg"
    rng = np.random.default_rng(3)
    given: dict[int, str] = {}
    for month in range(20):
        reg = register.read_register(path, CRS)
        sites = [
            [(1000.0 * k + 30 * j, 0.0) for j in range(1 + (month + k) % 4)] for k in range(6) if rng.random() > 0.2
        ]
        sites += [[(1000.0 * k, 2000.0)] for k in range(month % 5)]  # new ones, now and then
        reg, *_ = one_run(reg, sites, f"2025-{month + 1:02d}")
        register.write_register(path, reg)
        live = reg.sites[reg.sites["status"] == "active"]["site_id"].tolist()
        sid = int(rng.choice(live))
        verdict = str(rng.choice(register.REVIEW_STATUSES[1:]))
        register.set_verdict(path, sid, verdict, f"month {month}", "ana", date(2025, 1, 1), CRS)
        given[sid] = verdict
        kept = register.read_register(path, CRS).sites.set_index("site_id")["review"]
        assert {s: kept[s] for s in given} == given


def test_edits_in_a_runs_sites_layer_are_taken_up_and_a_typo_is_kept_in_the_note():
    reg, _, _, sites, _ = one_run(register.empty_register(CRS), [A, B, C], "r1")
    edited = pd.DataFrame(sites.drop(columns="geometry"))
    edited.loc[0, ["review", "review_note"]] = ["rejected", "road cut"]
    edited.loc[1, ["review", "review_note"]] = ["not a mine", ""]
    taken = register.take_up_edits(reg, edited, date(2026, 3, 1))
    assert taken == [1, 2]
    rows = reg.sites.set_index("site_id")
    assert rows.loc[1, ["review", "review_note", "reviewed_on"]].tolist() == ["rejected", "road cut", "2026-03-01"]
    assert rows.loc[2, "review"] == "uncertain" and "not a mine" in rows.loc[2, "review_note"]
    # the next run carries them and reports the change of verdict
    reg, _, _, sites, changes = one_run(reg, [A, B, C], "r2")
    assert sites["review"].tolist() == ["rejected", "uncertain", "unreviewed"]
    assert changes[changes["change"] == "verdict"]["site_id"].tolist() == [1, 2]
    # the same layer read again is not an edit any more
    assert register.take_up_edits(reg, pd.DataFrame(sites.drop(columns="geometry")), date(2026, 4, 1)) == []


def test_a_later_verdict_in_the_register_wins_over_an_older_edit_in_a_run():
    reg, _, _, sites, _ = one_run(register.empty_register(CRS), [A], "r1")
    edited = pd.DataFrame(sites.drop(columns="geometry"))
    edited.loc[0, ["review", "reviewed_on"]] = ["confirmed", "2026-01-01"]
    reg.sites.loc[0, ["review", "reviewed_on"]] = ["rejected", "2026-02-01"]
    assert register.take_up_edits(reg, edited, date(2026, 3, 1)) == []
    assert reg.sites.loc[0, "review"] == "rejected"


def test_rejected_sites_leave_the_counts_and_reviewed_totals_are_given():
    ponds, clear, sites = run_layers([A, B, C])
    sites["review"] = ["rejected", "confirmed", "unreviewed"]
    table = yearly_summary("x", [2021], ponds, clear, sites, {2021: 5}, date(2021, 12, 31), date(2022, 1, 1))
    row = table.iloc[0]
    assert (row["sites_total"], row["sites_reviewed_total"], row["sites_confirmed_total"]) == (2, 1, 1)
    assert row["sites_rejected_total"] == 1 and row["ponds_total"] == len(B) + len(C)


def test_register_round_trip_and_an_analysts_own_column_survives(tmp_path):
    path = tmp_path / "r.gpkg"
    reg, *_ = one_run(register.empty_register(CRS), [A, B], "r1")
    reg.sites["my_notes"] = ["a", "b"]
    register.write_register(path, reg)
    back = register.read_register(path, CRS)
    assert back.sites["site_id"].tolist() == [1, 2] and back.sites["my_notes"].tolist() == ["a", "b"]
    assert back.next_id == reg.next_id
    reg2, *_ = one_run(back, [A, B], "r2")
    assert reg2.sites["my_notes"].tolist() == ["a", "b"]


def test_a_register_of_an_older_layout_is_read_with_defaults(tmp_path):
    """A register as the first version wrote it could lack columns and the meta table: it is read,
    blanks take their defaults, and the ids go on above the highest."""
    path = tmp_path / "old.gpkg"
    old = gpd.GeoDataFrame(
        {"site_id": [3, 7], "status": ["active", "quiet"], "review": ["rejected", None]},
        geometry=[square(0, 0), square(1000, 0)],
        crs=CRS,
    )
    old.to_file(path, layer="sites", engine="pyogrio")
    reg = register.read_register(path, CRS)
    assert reg.sites["review"].tolist() == ["rejected", "unreviewed"]
    assert reg.next_id["site_id"] == 8
    reg, _, _, sites, _ = one_run(reg, [[(0, 0)], [(5000, 0)]], "r2")
    assert sites["site_id"].tolist() == [3, 8] and sites["review"].tolist() == ["rejected", "unreviewed"]


def test_a_register_from_a_newer_version_is_a_one_line_error(tmp_path):
    path = tmp_path / "new.gpkg"
    reg, *_ = one_run(register.empty_register(CRS), [A], "r1")
    register.write_register(path, reg)
    import pyogrio

    pyogrio.write_dataframe(pd.DataFrame({"key": ["schema_version"], "value": ["99"]}), path, layer="meta")
    with pytest.raises(OutputError, match="newer version"):
        register.read_register(path, CRS)
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(OutputError, match="unreadable"):
        register.read_register(tmp_path / "junk.gpkg", CRS)


def test_set_verdict_refuses_an_unknown_site_or_status(tmp_path):
    path = tmp_path / "r.gpkg"
    with pytest.raises(OutputError, match="run the AOI first"):
        register.set_verdict(path, 1, "rejected", None, "ana", date(2026, 1, 1), CRS)
    reg, *_ = one_run(register.empty_register(CRS), [A], "r1")
    register.write_register(path, reg)
    with pytest.raises(ConfigError, match="not in the register"):
        register.set_verdict(path, 5, "rejected", None, "ana", date(2026, 1, 1), CRS)
    with pytest.raises(ConfigError, match="one of"):
        register.set_verdict(path, 1, "nope", None, "ana", date(2026, 1, 1), CRS)


KILL_DURING_WRITE = """
import sys, os, signal, pyogrio
from pipeline import register
path, crs = sys.argv[1], "EPSG:32647"
reg = register.read_register(path, crs)
reg.sites["review"] = "confirmed"
real = pyogrio.write_dataframe
def dying(df, p, layer=None, **kw):
    if layer == "meta":  # the sites are written, the file not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return real(df, p, layer=layer, **kw)
pyogrio.write_dataframe = dying
register.write_register(path, reg)
"""


def test_a_sigkill_during_the_register_update_leaves_the_previous_register(tmp_path):
    path = tmp_path / "aoi.register.gpkg"
    reg, *_ = one_run(register.empty_register(CRS), [A, B], "r1")
    reg.sites.loc[0, "review"] = "rejected"
    register.write_register(path, reg)
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, str(path)], cwd=REPO, env=subprocess_env(), capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert path.read_bytes() == before
    assert register.read_register(path, CRS).sites["review"].tolist() == ["rejected", "unreviewed"]
    leftovers = list(tmp_path.glob(".*.tmp-*"))
    assert leftovers  # the killed writer's file; the next write removes it
    register.write_register(path, reg)
    assert not [p for p in tmp_path.glob(".*.tmp-*") if p.exists()]


def test_changes_rows_carry_register_ids_and_geometry():
    reg, *_ = one_run(register.empty_register(CRS), [A], "r1")
    _, _, _, _, changes = one_run(reg, [A + [(90, 0)], C], "r2")
    assert changes["change"].tolist() == ["new", "grown"]
    assert changes["site_id"].tolist() == [2, 1]
    assert changes.loc[1, "new_ponds"] == 1 and changes.loc[1, "footprint_change_pct"] > 10
    assert changes.crs == CRS and changes.geometry.is_valid.all()
    assert json.loads(changes.to_crs(4326).to_json())["features"][0]["properties"]["change"] == "new"
