"""The simulated AOI: contract 3 catalog, contract 5 truth, determinism, and the physics tests rely on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from datetime import date, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pystac
import pytest
import rasterio
import shapely
from pyproj import CRS
from scipy import ndimage
from scipy.spatial import cKDTree

from pipeline.aoi import load_aoi
from pipeline.errors import OutputError
from pipeline.lab import simulate as sim_mod
from pipeline.lab.simulate import (
    RELATIVE_ORBIT,
    SCENARIOS,
    SECOND_ORBIT,
    Scenario,
    load_pools,
    scene_schedule,
    simulate,
)
from tests.support import run_checker

SMALL = dict(size_km=2, start_year=2021, end_year=2023, revisit_days=20)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim") / "aoi", seed=0, **SMALL)


@pytest.fixture(scope="module")
def scenes(sim):
    cat = pystac.Catalog.from_file(str(sim.catalog))
    items = [i for i in cat.get_items(recursive=True) if i.collection_id == "sentinel-2-l2a"]
    return sorted(items, key=lambda i: i.datetime)


def _reflectance(item: pystac.Item, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(DN, reflectance) of an asset, scaled with the asset's own raster:bands."""
    asset = item.assets[key]
    rb = asset.extra_fields["raster:bands"][0]
    with rasterio.open(asset.get_absolute_href()) as src:
        dn = src.read(1)
    return dn, dn * rb["scale"] + rb["offset"]


def _scl(item: pystac.Item) -> np.ndarray:
    with rasterio.open(item.assets["scl"].get_absolute_href()) as src:
        return src.read(1)


def test_catalog_meets_contract_3(sim):
    done = run_checker("check_catalog.py", sim.catalog)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sim.start == date(2021, 1, 1) and sim.end == date(2023, 12, 31)


def test_items_look_like_earth_search(scenes, sim):
    item = scenes[0]
    assert item.id == "S2B_47RQL_20210101_0_L2A" and scenes[1].id.startswith("S2A_")
    assert len(scenes) == (date(2023, 12, 31) - date(2021, 1, 1)).days // 20 + 1
    p = item.properties
    assert p["constellation"] == "sentinel-2" and p["s2:mgrs_tile"] == "47RQL"
    assert p.get("proj:code", f"EPSG:{p.get('proj:epsg')}") == "EPSG:32647"  # pystac migrates proj:epsg
    assert Path(item.assets["blue"].href).name == "B02.tif" and not Path(item.assets["blue"].href).is_absolute()
    assert item.assets["blue"].extra_fields["gsd"] == 10 and item.assets["swir16"].extra_fields["gsd"] == 20
    with rasterio.open(item.assets["nir"].get_absolute_href()) as src:
        assert src.profile["compress"].lower() == "deflate" and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    params = json.loads(json.loads(sim.catalog.read_text())["simulation"])
    assert params["seed"] == 0 and params["revisit_days"] == 20


def test_dem_is_geographic_glo30(sim, scenes):
    cat = pystac.Catalog.from_file(str(sim.catalog))
    (dem,) = [i for i in cat.get_items(recursive=True) if i.collection_id == "cop-dem-glo-30"]
    with rasterio.open(dem.assets["data"].get_absolute_href()) as src:
        assert src.crs.to_epsg() == 4326 and src.dtypes[0] == "float32"
        assert src.res == pytest.approx((1 / 3600, 1 / 3600))
        z = src.read(1)
        west, south, east, north = src.bounds
    lon0, lat0, lon1, lat1 = scenes[0].bbox
    assert west <= lon0 and south <= lat0 and east >= lon1 and north >= lat1
    assert 800 <= z.min() and z.max() <= 2800 and z.max() - z.min() > 200


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    short = dict(size_km=2, start_year=2022, end_year=2022, revisit_days=90)
    a, b = simulate(tmp_path / "a", 0, **short), simulate(tmp_path / "b", 0, **short)
    c = simulate(tmp_path / "c", 1, **short)
    asset = "sentinel-2-l2a/S2A_47RQL_20220401_0_L2A/B04.tif"
    assert (a.catalog.parent / asset).read_bytes() == (b.catalog.parent / asset).read_bytes()
    assert (a.catalog.parent / asset).read_bytes() != (c.catalog.parent / asset).read_bytes()
    for layer in ("ponds", "clearings", "sites", "confounders"):
        ta, tb = gpd.read_file(a.truth, layer=layer), gpd.read_file(b.truth, layer=layer)
        assert ta.equals(tb), layer
    assert not gpd.read_file(a.truth, layer="ponds").equals(gpd.read_file(c.truth, layer="ponds"))
    assert a.aoi.read_text() == b.aoi.read_text() != c.aoi.read_text()


def test_baseline_0400_adds_1000_dn_not_reflectance(scenes):
    """Across 25 Jan 2022 the DN of the same forest jumps by ~1000 while its reflectance does not."""
    clear = [i for i in scenes if i.properties["eo:cloud_cover"] < 5 and i.datetime.month in (11, 12, 1, 2, 3)]
    before = max((i for i in clear if i.datetime.date() < date(2022, 1, 25)), key=lambda i: i.datetime)
    after = min((i for i in clear if i.datetime.date() >= date(2022, 1, 25)), key=lambda i: i.datetime)
    assert before.properties["s2:processing_baseline"] < "04.00" <= after.properties["s2:processing_baseline"]
    assert before.assets["red"].extra_fields["raster:bands"][0]["offset"] == 0
    assert after.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    dn0, r0 = _reflectance(before, "red")
    dn1, r1 = _reflectance(after, "red")
    forest = ((_scl(before) == 4) & (_scl(after) == 4)).repeat(2, 0).repeat(2, 1)
    assert forest.mean() > 0.5
    assert np.median(r1[forest]) == pytest.approx(np.median(r0[forest]), abs=0.003)
    assert np.median(dn1[forest].astype(int)) - np.median(dn0[forest].astype(int)) == pytest.approx(1000, abs=30)


def test_monsoon_is_cloudier_than_dry_season(scenes):
    cover = {
        m: [i.properties["eo:cloud_cover"] for i in scenes if i.datetime.month in m]
        for m in ((6, 7, 8, 9), (11, 12, 1, 2))
    }
    assert np.mean(cover[(6, 7, 8, 9)]) > 60 > 30 > np.mean(cover[(11, 12, 1, 2)])
    for i in scenes:  # eo:cloud_cover is the share of SCL cloud classes among valid pixels
        scl = _scl(i)
        if i.datetime.month == 8:
            share = 100 * np.isin(scl[scl > 0], (8, 9, 10)).mean()
            assert i.properties["eo:cloud_cover"] == pytest.approx(share, abs=0.01)
            break


def test_truth_layers_and_columns(sim):
    layers = dict(pyogrio.list_layers(sim.truth))
    assert {"ponds", "clearings", "sites", "confounders"} <= set(layers)
    ponds = gpd.read_file(sim.truth, layer="ponds")
    clearings = gpd.read_file(sim.truth, layer="clearings")
    sites = gpd.read_file(sim.truth, layer="sites")
    confounders = gpd.read_file(sim.truth, layer="confounders")
    assert {
        "pond_id",
        "site_id",
        "first_year",
        "built",
        "abandoned",
        "shape",
        "colour",
        "covered",
        "detectable",
        "area_m2",
        "geometry",
    } <= set(ponds.columns)
    assert {"clearing_id", "site_id", "first_year", "cleared", "abandoned", "area_m2"} <= set(clearings.columns)
    assert {"site_id", "first_year", "n_ponds"} <= set(sites.columns)
    assert {"kind", "year", "area_m2"} <= set(confounders.columns)
    for gdf in (ponds, clearings, sites, confounders):
        assert gdf.crs.to_epsg() == 32647
    for gdf in (ponds, clearings):
        assert gdf["first_year"].between(2021, 2023).all()
    # a pond that was there before the period counts in the period's first year
    built_year = ponds["built"].str[:4].astype(int)
    assert (ponds["first_year"] == np.maximum(built_year, 2021)).all()
    assert set(ponds["colour"]) <= {"milky", "blue", "plastic_white", "plastic_black"}
    assert (ponds["covered"] == ponds["colour"].str.startswith("plastic")).all()
    assert (ponds["detectable"] == (~ponds["covered"] & (ponds["area_m2"] >= 300))).all()
    assert set(confounders["kind"]) >= {"river", "paddy"}
    assert (sites.set_index("site_id")["n_ponds"] == ponds.groupby("site_id").size()).all()


def test_ponds_stand_on_real_pools_with_their_shape_area(sim):
    ponds = gpd.read_file(sim.truth, layer="ponds")
    pools = load_pools()
    pools_xy = shapely.get_coordinates(pools.geometry.values)
    centres = shapely.get_coordinates(ponds.geometry.centroid.values)
    distance, nearest = cKDTree(pools_xy).query(centres)
    assert distance.max() < 0.01
    assert (np.where(pools["type"].to_numpy()[nearest] == "circular", "round", "square") == ponds["shape"]).all()
    # size: the gap to the nearest neighbouring pool less a 4 m bund, 8-40 m
    gap = cKDTree(pools_xy).query(pools_xy[nearest], 2)[0][:, 1]
    size = np.clip(gap - 4, 8, 40)
    want = np.where(ponds["shape"] == "square", size**2, np.pi * (size / 2) ** 2)
    assert ponds["area_m2"].to_numpy() == pytest.approx(want, rel=0.005)
    assert ponds["area_m2"].to_numpy() == pytest.approx(ponds.geometry.area.to_numpy())


def test_a_built_pond_darkens_its_pixel_in_nir(sim, scenes):
    """The largest open pond: NIR at its centre collapses once it holds water (milky or lined)."""
    ponds = gpd.read_file(sim.truth, layer="ponds")
    ponds = ponds[ponds["detectable"] & (ponds["abandoned"] == "") & (ponds["built"] > "2021-03-01")]
    if ponds.empty:
        pytest.skip("no open pond built inside this simulated period")
    pond = ponds.loc[ponds["area_m2"].idxmax()]
    built = date.fromisoformat(pond["built"])
    x, y = pond.geometry.centroid.x, pond.geometry.centroid.y

    def nir_at(item):
        _, nir = _reflectance(item, "nir")
        with rasterio.open(item.assets["nir"].get_absolute_href()) as src:
            row, col = src.index(x, y)
        scl = _scl(item)[row // 2, col // 2]
        return nir[row, col] if scl in (4, 5, 6) else None

    before = [v for i in scenes if i.datetime.date() < built and (v := nir_at(i)) is not None]
    after = [v for i in scenes if i.datetime.date() > built and (v := nir_at(i)) is not None]
    assert before and after
    assert np.median(after) < np.median(before) - 0.1


def test_aoi_lies_inside_the_images(sim, scenes):
    aoi = load_aoi(sim.aoi)
    assert aoi.properties["simulated"] is True and aoi.name == "simulated-seed0"
    with rasterio.open(scenes[0].assets["blue"].get_absolute_href()) as src:
        left, bottom, right, top = src.bounds
    a_left, a_bottom, a_right, a_top = aoi.grid.boundingbox
    assert left < a_left and bottom < a_bottom and right > a_right and top > a_top
    assert aoi.area_km2 == pytest.approx(4.0, rel=0.01)


def test_refuses_a_directory_that_is_not_a_simulation(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        simulate(tmp_path, 0, size_km=1, start_year=2022, end_year=2022, revisit_days=180)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_rewrites_its_own_output(tmp_path):
    short = dict(size_km=1, start_year=2022, end_year=2022, revisit_days=180)
    simulate(tmp_path, 0, **short)
    calls = []
    again = simulate(tmp_path, 0, **short, progress=lambda done, total: calls.append((done, total)))
    assert again.catalog.is_file() and not list(tmp_path.glob(".partial-*"))
    assert calls[-1] == (3, 3) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_reuse_keeps_a_matching_simulation_and_redoes_a_different_one(tmp_path):
    short = dict(size_km=1, start_year=2022, end_year=2022, revisit_days=180)
    first = simulate(tmp_path, 0, **short)
    stamp = first.catalog.stat().st_mtime_ns
    assert simulate(tmp_path, 0, **short, reuse=True).catalog.stat().st_mtime_ns == stamp
    simulate(tmp_path, 0, **{**short, "revisit_days": 120}, reuse=True)
    assert first.catalog.stat().st_mtime_ns != stamp


@pytest.mark.parametrize("revisit", [1, 3, 5, 10])
def test_second_orbit_adds_scenes_on_days_of_its_own(revisit):
    """R004 passes 3 days after R104; on a day R104 already has, it is dropped (one scene a day keeps
    Earth Search ids unique), and R104's schedule is the one-orbit schedule, index for index."""
    start, end = date(2022, 1, 1), date(2022, 12, 31)
    one, two = scene_schedule(start, end, revisit), scene_schedule(start, end, revisit, second_orbit=True)
    assert [s for s in two if s.orbit == RELATIVE_ORBIT] == one
    assert len({s.date for s in two}) == len({s.id for s in two}) == len(two)
    assert [s.date for s in two] == sorted(s.date for s in two) and two[-1].date <= end
    second = [s for s in two if s.orbit == SECOND_ORBIT]
    assert len(second) == (0 if revisit in (1, 3) else len(one))  # Dec 27 + 3 is still in the year
    assert all(s.datetime.hour == 4 and s.datetime.minute == 17 for s in second)


def test_every_named_scenario_changes_something_and_the_default_is_standard():
    assert Scenario().changed() == {} and SCENARIOS["standard"] == Scenario()
    assert all(sc.changed() for name, sc in SCENARIOS.items() if name != "standard")


# ------------------------------------------------------------------------------------ the standard, unchanged

# The digest of a small standard simulation (decoded rasters and truth) recorded before the valley and
# misregistration scenarios were added: new scenarios must draw from streams of their own and leave the
# standard landscape as it was. A numpy/scipy/GDAL upgrade may change it too; then re-record it, after
# checking that only the library changed.
STANDARD_DIGEST = "339342b851776ec2a84990312dae53e27b726aa1095dba4c5a1cc227b300c723"


def _digest(sim) -> str:
    h = hashlib.sha256()
    for tif in sorted(sim.catalog.parent.rglob("*.tif")):
        with rasterio.open(tif) as src:
            h.update(tif.relative_to(sim.catalog.parent).as_posix().encode())
            h.update(src.read(1).tobytes())
    for layer in ("ponds", "clearings", "sites", "confounders"):
        t = gpd.read_file(sim.truth, layer=layer)
        h.update(b"".join(shapely.to_wkb(t.geometry.values)))
        h.update(t.drop(columns="geometry").to_csv().encode())
    return h.hexdigest()


def test_the_standard_scenario_is_what_it_was(tmp_path):
    sim = simulate(tmp_path / "standard", 0, size_km=1, start_year=2020, end_year=2021, revisit_days=120)
    assert _digest(sim) == STANDARD_DIGEST


# ------------------------------------------------------------------------------------------------ the valley

VALLEY_KINDS = {"river", "stream", "fish_pond", "gold_working", "road_cut", "plantation", "village"}


@pytest.fixture(scope="module")
def valley(tmp_path_factory):
    return simulate(
        tmp_path_factory.mktemp("valley") / "aoi",
        3,
        size_km=1.5,
        start_year=2023,
        end_year=2023,
        revisit_days=30,
        scenario="valley",
    )


def test_the_valley_holds_every_confounder_kind_and_none_is_a_truth_pond(valley):
    conf = gpd.read_file(valley.truth, layer="confounders")
    ponds = gpd.read_file(valley.truth, layer="ponds")
    assert VALLEY_KINDS <= set(conf["kind"])
    mine = conf[conf["kind"].isin(VALLEY_KINDS)]  # the year a feature first exists, the period's first at least
    assert mine["year"].between(2023, 2023).all() and (mine["area_m2"] > 0).all()
    assert len(conf[conf["kind"] == "river"]) == 1
    # fish ponds and gold workings (their sluice ponds inside) keep off the mines' ponds
    water = conf[conf["kind"].isin(["fish_pond", "gold_working"])].union_all()
    assert not ponds.geometry.intersects(water).any()
    params = json.loads(json.loads(valley.catalog.read_text())["simulation"])
    assert params["scenario"] == {"valley_confounders": True, "misregistration_m": 6.0}
    done = run_checker("check_catalog.py", valley.catalog)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_valley_leaves_the_mines_as_they_are(valley, tmp_path):
    standard = simulate(tmp_path / "standard", 3, size_km=1.5, start_year=2023, end_year=2023, revisit_days=180)
    for layer in ("ponds", "clearings", "sites"):
        assert gpd.read_file(valley.truth, layer=layer).equals(gpd.read_file(standard.truth, layer=layer)), layer


def test_rivers_differ_in_width_and_form_from_seed_to_seed_and_swell_in_the_monsoon():
    axis = shapely.LineString([(0, -2500), (0, 2500)])
    box = shapely.box(-1000, -1000, 1000, 1000)
    rivers = [sim_mod.valley_river(sim_mod._rng(seed, "valley_river"), axis, 160.0, box) for seed in range(16)]
    widths = np.array([r.mean_width_m for r in rivers])
    assert widths.min() >= 5 and widths.max() <= 60
    assert (widths < 15).sum() >= 4 and (widths > 25).sum() >= 3  # streams-as-rivers common, wide ones too
    assert {r.form for r in rivers} == {"meandering", "braided"}
    assert np.ptp([r.belt.area for r in rivers]) > 5e4
    stage = np.array([z[1] for z in sim_mod.RIVER_ZONES])

    def wet_m2(river, day):
        w = sim_mod.valley_river_cover(
            sim_mod._day(day),
            float(day.timetuple().tm_yday),
            stage,
            stage * 0,
            stage * 0,
            0.5,
            0.1,
            0.4,
            0.5,
            np.ones(1),
            day.year,
        )
        water = w[:, [sim_mod.COVER[c] for c in ("milky_water", "clear_water", "river_water")]].sum(axis=1)
        return float(np.dot(water, [z.area for z in river.zones]))

    for r in rivers:  # the bed's banks and bars are under water in August, dry in March
        assert wet_m2(r, date(2023, 8, 15)) > 1.3 * wet_m2(r, date(2023, 3, 15))


def test_misregistration_shifts_the_ground_of_a_scene_off_the_grid():
    pools = load_pools()
    window = sim_mod.choose_window(pools, 3, 1500.0)
    crs = CRS.from_epsg(32647)
    land = sim_mod.build_landscape(3, window, crs, date(2020, 1, 1), date(2020, 12, 31), pools.to_crs(crs))[0]
    moved = dataclasses.replace(land, scenario=Scenario(misregistration_m=20.0))
    noise = np.zeros(1 << 18, np.float32)
    for k in range(12):  # a clear winter scene: the sky is drawn on the grid, the ground moves under it
        scene = sim_mod.Scene(k, date(2020, 1, 5) + timedelta(days=5 * k), "sentinel-2a")
        still = sim_mod.render_scene(land, scene, 3, noise)
        if still.cloud_cover < 1:
            break
    shifted = sim_mod.render_scene(moved, scene, 3, noise)
    dx, dy = sim_mod.scene_shift(3, scene, 20.0)
    a, b = still.dn["red"].astype(np.float32), shifted.dn["red"].astype(np.float32)
    assert math.hypot(dx, dy) > 2 and np.abs(b - a).mean() > 5
    assert np.abs(b - sim_mod.misregister(a, dx, dy)).mean() < 0.3 * np.abs(b - a).mean()
    # the shift is scipy's bilinear one with the edge repeated, only faster
    block = a[:60, :80]
    assert np.allclose(
        sim_mod.misregister(block, dx, dy),
        ndimage.shift(block, (-dy / 10, dx / 10), order=1, mode="nearest"),
        atol=1e-3,
    )
    # about 6 m (sd) before the GRI refinement of 2021, about 2.5 m after; each scene its own draw
    sd = [
        np.std([sim_mod.scene_shift(1, sim_mod.Scene(k, day, "sentinel-2a"), 6.0) for k in range(400)])
        for day in (date(2019, 6, 1), date(2022, 6, 1))
    ]
    assert sd[0] == pytest.approx(6.0, rel=0.15) and sd[1] == pytest.approx(2.5, rel=0.15)


def _indices(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NDVI, MNDWI and BSI of cover weights (objects, covers); NaN where the object does not show yet."""
    refl = np.where(w.sum(axis=1, keepdims=True) > 0, w @ sim_mod.ENDMEMBERS, np.nan)
    blue, green, red, nir, swir = (
        refl[:, [b.key for b in sim_mod.BANDS].index(k)] for k in ("blue", "green", "red", "nir", "swir16")
    )
    return (
        (nir - red) / (nir + red),
        (green - swir) / (green + swir),
        (swir + red - nir - blue) / (swir + red + nir + blue),
    )


def test_valley_covers_read_as_what_they_are():
    months = [date(2023, m, 15) for m in range(1, 13)]

    def one(v):
        return np.array([float(v)])

    built = one(sim_mod._day(date(2022, 6, 1)))

    def through_the_year(timeline, **kw):
        return np.array([_indices(timeline(sim_mod._day(d), float(d.timetuple().tm_yday), **kw)) for d in months])[
            ..., 0
        ]

    for clarity in (0.0, 1.0):  # the low-water channel, turbid or clear: water in every month
        river = through_the_year(
            sim_mod.valley_river_cover,
            stage=one(-1),
            mud=one(0),
            grass=one(0),
            clarity=clarity,
            silt_low=0.1,
            silt_high=0.5,
            sand=0.5,
            flood=np.ones(1),
            first_year=2023,
        )
        assert (river[:, 1] > 0.5).all()
    fish = through_the_year(
        sim_mod.fish_pond_cover, dug_day=built, green=one(0.7), drain=np.full((1, 1), sim_mod.NEVER), drain_days=one(60)
    )
    stream = through_the_year(sim_mod.stream_cover, seasonal=one(1), openness=one(1), clarity=one(0.5), sand=one(0.5))
    assert (fish[:, 1] > 0.5).all() and (stream[:, 1] > 0).sum() >= 8
    for redness in (0.1, 0.9):  # road cuts and gold workings are bare, laterite ones the barest
        road = through_the_year(sim_mod.road_cut_cover, built_day=built, redness=one(redness), verge=one(0.15))
        assert (road[:, 0] < 0.3).all() and (road[:, 2] > (0.15 if redness > 0.5 else 0.05)).all()
    gold = through_the_year(sim_mod.gold_working_cover, start_day=built, gravel=one(0.6), mud=one(0.2))
    assert (gold[:, 0] < 0.3).all() and (0.05 < gold[:, 2]).all() and (gold[:, 2] < road[:, 2]).all()
    gravel = _indices(np.eye(len(sim_mod.COVERS))[[sim_mod.COVER["gravel"], sim_mod.COVER["laterite"]]])
    assert gravel[0][0] < 0.3 and 0.05 < gravel[2][0] < gravel[2][1]
    plantation = through_the_year(
        sim_mod.plantation_cover,
        cleared_day=one(sim_mod._day(date(2023, 1, 20))),
        planted_day=one(sim_mod._day(date(2023, 4, 1))),
        green_days=one(300),
        canopy=one(1),
        wintering=one(1),
        redness=one(0.5),
    )
    assert plantation[2, 0] < 0.3 < 0.6 < plantation[11, 0]  # bare in March, green by December
