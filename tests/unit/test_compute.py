"""Compute stages on small arrays built in the test, with values someone could get wrong."""

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline import classify, count
from pipeline.change import NONE, month_to_year, persistent_onset
from pipeline.lab import xarray_reference as xr_ref
from pipeline.lab.xarray_reference import onset_maps
from pipeline.rules import ClearingRules, PondRules


def arr(values, dims=("y",)):
    return xr.DataArray(np.asarray(values, np.float32), dims=dims)


def test_ndvi_of_known_reflectances():
    # forest: red 0.03, NIR 0.33 -> (0.33 - 0.03) / 0.36; the sign is NIR minus red
    assert float(xr_ref.ndvi(arr([0.03]), arr([0.33]))[0]) == pytest.approx(0.8333, abs=1e-4)
    assert float(xr_ref.ndvi(arr([0.2]), arr([0.1]))[0]) == pytest.approx(-1 / 3, abs=1e-4)


def test_mndwi_separates_milky_water_from_laterite():
    water = float(xr_ref.mndwi(arr([0.16]), arr([0.015]))[0])
    laterite = float(xr_ref.mndwi(arr([0.11]), arr([0.33]))[0])
    assert water == pytest.approx(0.8284, abs=1e-3) and laterite == pytest.approx(-0.5, abs=1e-3)


def test_bsi_and_zero_sum_is_nan():
    b = xr_ref.bsi(arr([0.07]), arr([0.18]), arr([0.26]), arr([0.33]))
    assert float(b[0]) == pytest.approx((0.51 - 0.33) / 0.84, abs=1e-4)
    nd = xr_ref.normalized_difference(arr([0.0]), arr([0.0]))
    assert np.isnan(nd[0]) and nd.dtype == np.float32


def test_scl_mask_buffers_clouds_but_not_nodata():
    scl = np.full((1, 9, 9), 4, np.uint8)
    scl[0, 4, 4] = 9  # one cloud pixel
    scl[0, 0, 8] = 0  # one nodata pixel
    valid = xr_ref.scl_mask(xr.DataArray(scl, dims=("time", "y", "x")), [0, 1, 3, 8, 9, 10], 2).values[0]
    assert not valid[2:7, 2:7].any()  # cloud grown by 2 px each way: a 5 x 5 hole
    assert valid[1, 4] and valid[4, 1]
    assert not valid[0, 8] and valid[0, 7] and valid[1, 8]  # nodata not grown


def test_scl_mask_is_lazy_and_same_on_dask():
    scl = np.random.default_rng(0).choice(np.array([4, 5, 9, 3], np.uint8), size=(3, 40, 40))
    eager = xr_ref.scl_mask(xr.DataArray(scl, dims=("time", "y", "x")), [3, 9], 3)
    lazy = xr_ref.scl_mask(xr.DataArray(da.from_array(scl, chunks=(1, 16, 16)), dims=("time", "y", "x")), [3, 9], 3)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(eager.values, lazy.values)  # chunk edges do not cut the buffer


def test_pond_and_bare_rules():
    # water, laterite, forest, an invalid view, a white roof (positive MNDWI, but bright in B08)
    ind = xr.Dataset(
        {
            "ndvi": arr([-0.5, 0.15, 0.8, -0.5, 0.0]),
            "mndwi": arr([0.8, -0.5, -0.4, 0.3, 0.12]),
            "bsi": arr([-0.02, 0.2, -0.4, 0.18, 0.0]),
        }
    )
    nir = arr([0.04, 0.28, 0.3, 0.04, 0.58])
    valid = xr.DataArray(np.array([True, True, True, False, True]), dims="y")
    water = xr_ref.pond_like(ind, valid, PondRules(), nir)
    bare = xr_ref.bare_like(ind, valid, ClearingRules(), water)
    assert water.values.tolist() == [True, False, False, False, False]
    assert bare.values.tolist() == [False, True, False, False, False]  # an invalid view is neither


def test_monthly_counts_cover_every_month_of_the_period():
    times = pd.to_datetime(["2021-01-05", "2021-01-25", "2021-03-10"])
    flag = xr.DataArray(np.array([[[True]], [[False]], [[True]]]), dims=("time", "y", "x"), coords={"time": times})
    m = xr_ref.monthly_counts({"hit": flag}, pd.Timestamp("2021-01-01").date(), pd.Timestamp("2021-04-30").date())
    assert m["hit"].values[:, 0, 0].tolist() == [1, 0, 1, 0]
    assert xr_ref.yearly_counts(m["hit"]).values[:, 0, 0].tolist() == [2]


def test_onset_rejects_a_cloud_edge_and_a_swidden_but_dates_a_november_pond():
    months = 36
    valid = np.full((3, months), 3)
    hits = np.zeros((3, months), int)
    hits[0, 5] = 1  # a cloud edge once in June of year 1
    hits[1, 14:19] = 3  # swidden: bare Mar-Jul of year 2, then green
    hits[2, 22:] = 3  # a pond dug in November of year 2 that stays
    onset, last, seen = persistent_onset(valid, hits, window=12, persistence=0.6, min_obs=3)
    assert onset.tolist() == [NONE, NONE, 22]
    assert last[2] == 35 and seen[2] == 14
    years = month_to_year(onset, pd.date_range("2021-01-01", periods=months, freq="MS"))
    assert years.tolist() == [NONE, NONE, 2022]


def test_onset_keeps_an_abandoned_pond_that_lasted_a_year():
    valid, hits = np.full((1, 48), 3), np.zeros((1, 48), int)
    hits[0, 6:24] = 3  # a pond from July of year 1 to December of year 2, then dried
    onset, last, seen = persistent_onset(valid, hits, window=12, persistence=0.6, min_obs=3)
    assert (onset[0], last[0], seen[0]) == (6, 23, 18)


def test_onset_waits_through_cloudy_months():
    valid = np.array([[3, 0, 0, 0, 3, 3, 3]])
    hits = np.array([[0, 0, 0, 0, 3, 3, 3]])
    onset, _, _ = persistent_onset(valid, hits, window=3, persistence=0.6, min_obs=3)
    assert onset[0] == 4  # months without a clear view can neither start nor stop a feature


def test_onset_maps_lazy_equals_eager():
    rng = np.random.default_rng(1)
    valid = rng.integers(0, 4, size=(24, 10, 10)).astype(np.int16)
    hits = np.minimum(valid, rng.integers(0, 4, size=(24, 10, 10))).astype(np.int16)
    dims = ("month", "y", "x")
    eager = onset_maps(xr.DataArray(valid, dims=dims), xr.DataArray(hits, dims=dims), 6, 0.6, 3)
    lazy = onset_maps(
        xr.DataArray(da.from_array(valid, chunks=(1, 5, 5)), dims=dims),
        xr.DataArray(da.from_array(hits, chunks=(1, 5, 5)), dims=dims),
        6,
        0.6,
        3,
    )
    assert isinstance(lazy["onset"].data, da.Array)
    xr.testing.assert_equal(eager, lazy.compute())


def test_slope_of_a_plane():
    yy, xx = np.mgrid[0:20, 0:20]
    dem = xr.DataArray((100 + 10.0 * xx).astype(np.float32), dims=("y", "x"))  # 10 m up per 10 m
    assert np.allclose(xr_ref.slope_deg(dem, 10.0).values, 45.0, atol=1e-4)


def test_share_while_active_ignores_regrowth_after_abandonment():
    from pipeline.change import share_while_active

    valid = np.full((2, 10), 2)
    green = np.zeros((2, 10), int)
    green[0, 6:] = 2  # abandoned mine greening after its last bare month (5)
    green[1, [2, 5]] = 1  # a paddy: rice views inside its bare span
    onset, last = np.array([1, 0]), np.array([5, 9])
    share = share_while_active(onset, last, valid, green)
    assert share[0] == 0.0 and share[1] == pytest.approx(2 / 20)
    assert np.isnan(share_while_active(np.array([-1]), np.array([-1]), valid[:1], green[:1]))[0]


def test_select_clearings_rejects_paddies_and_lone_landslide_strips():
    import geopandas as gpd
    from shapely.geometry import box

    rows = {  # name: (bare_share, green_share, months_seen, slope, geometry)
        "mine": (0.98, 0.0, 20, 18.0, box(0, 0, 150, 120)),
        "paddy": (0.62, 0.16, 56, 0.6, box(1000, 0, 1200, 100)),
        "landslide": (0.95, 0.0, 14, 25.0, box(2000, 0, 2040, 200)),
        "terrace": (0.97, 0.02, 20, 1.5, box(3000, 0, 3100, 100)),
    }
    g = gpd.GeoDataFrame(
        {
            "name": list(rows),
            "bare_share": [r[0] for r in rows.values()],
            "green_share": [r[1] for r in rows.values()],
            "months_seen": [r[2] for r in rows.values()],
            "mean_slope_deg": [r[3] for r in rows.values()],
        },
        geometry=[r[4] for r in rows.values()],
        crs=32647,
    )
    g["area_m2"] = g.area
    from pipeline.vectorize import elongation

    g["elongation"] = elongation(g.geometry)
    assert g["elongation"].round(2).tolist() == [1.25, 2.0, 5.0, 1.0]
    out = classify.select_clearings(g, ClearingRules())
    assert out["name"].tolist() == ["mine", "landslide", "terrace"]  # the paddy greens
    assert out["persistent"].tolist() == [True, False, False]  # strip and flat pad need ponds


def _clearings(rows: dict, **common):
    """A clearing table as ``features`` builds it, one 50 x 100 m box per row of column values."""
    import geopandas as gpd
    from shapely.geometry import box

    cols = list(next(iter(rows.values())))
    g = gpd.GeoDataFrame(
        {"name": list(rows), **{c: [r[c] for r in rows.values()] for c in cols}},
        geometry=[box(i * 1000, 0, i * 1000 + 50, 100) for i in range(len(rows))],
        crs=32647,
    )
    for k, v in {
        "bare_share": 1.0,
        "green_share": 0.0,
        "mean_slope_deg": 15.0,
        "area_m2": 5000.0,
        "elongation": 1.3,
        **common,
    }.items():
        if k not in g:
            g[k] = v
    return g


def test_a_lone_clearing_must_read_as_laterite():
    n = 60  # months in the record
    rows = {  # name: onset and last month, months bare, mean BSI of its clear views while active
        "old mine": {"onset_month": 10.0, "last_month": 59.0, "months_seen": 50, "bsi_mean": 0.20},
        "old scar": {"onset_month": 40.0, "last_month": 49.0, "months_seen": 10, "bsi_mean": 0.11},
        "young mine": {"onset_month": 57.0, "last_month": 59.0, "months_seen": 3, "bsi_mean": 0.19},
        "young scar": {"onset_month": 57.0, "last_month": 59.0, "months_seen": 3, "bsi_mean": 0.14},
    }
    months = pd.date_range("2020-01-01", periods=n, freq="MS")
    out = classify.select_clearings(_clearings(rows), ClearingRules(), months).set_index("name")
    assert out.index.tolist() == list(rows)  # all stay candidates, to join a site with ponds
    assert out["persistent"][out["persistent"]].index.tolist() == ["old mine"]
    assert out["provisional"][out["provisional"]].index.tolist() == ["young mine"]
    off = classify.select_clearings(_clearings(rows), ClearingRules(alone_min_bsi=0.0), months).set_index("name")
    assert off["persistent"]["old scar"] and off["provisional"]["young scar"]


def test_a_strip_bare_for_two_years_is_a_mine_not_a_landslide():
    rows = {  # a clearing cut along the contour, long and thin, bare 28 months; a scar as thin, bare 11
        "contour cut": {"months_seen": 28, "elongation": 3.4},
        "scar": {"months_seen": 11, "elongation": 3.4},
    }
    out = classify.select_clearings(_clearings(rows), ClearingRules()).set_index("name")
    assert out["persistent"].to_dict() == {"contour cut": True, "scar": False}
    assert not classify.select_clearings(_clearings(rows), ClearingRules(strip_min_months=36))["persistent"].any()


def test_a_pond_that_held_water_two_years_needs_no_clearing_beside_it():
    import geopandas as gpd
    from shapely.geometry import box

    ponds = gpd.GeoDataFrame(
        {"name": ["beside", "old lone", "young lone"], "area_m2": 400.0, "months_seen": [5, 30, 12]},
        geometry=[box(0, 0, 20, 20), box(1000, 0, 1020, 20), box(2000, 0, 2020, 20)],
        crs=32647,
    )
    clearing = gpd.GeoDataFrame(geometry=[box(40, 0, 140, 100)], crs=32647)
    assert classify.select_ponds(ponds, clearing, PondRules())["name"].tolist() == ["beside", "old lone"]
    assert classify.select_ponds(ponds, clearing.iloc[:0], PondRules())["name"].tolist() == ["old lone"]
    assert classify.select_ponds(ponds, clearing, PondRules(alone_min_months=36))["name"].tolist() == ["beside"]


def test_evidence_maps_lazy_equal_eager():
    from pipeline.lab.xarray_reference import evidence_maps, share_while_active_maps

    rng = np.random.default_rng(2)
    valid = rng.integers(0, 4, size=(24, 10, 12)).astype(np.int16)
    hits = np.minimum(valid, rng.integers(0, 4, size=(24, 10, 12))).astype(np.int16)
    sums = rng.normal(size=(24, 10, 12)).astype(np.float32)
    dims = ("month", "y", "x")

    def maps(lazy):
        wrap = (
            (lambda a: xr.DataArray(da.from_array(a, chunks=(1, 5, 6)), dims=dims))
            if lazy
            else (lambda a: xr.DataArray(a, dims=dims))
        )
        m = onset_maps(wrap(valid), wrap(hits), 6, 0.6, 3)
        m["share"] = share_while_active_maps(m, wrap(valid), wrap(hits))
        return m.merge(evidence_maps(m, wrap(valid), wrap(hits), {"mndwi": wrap(sums)}))

    eager, lazy = maps(False), maps(True)
    assert isinstance(lazy["mndwi_mean"].data, da.Array) and (eager["onset"] >= 0).any()
    xr.testing.assert_allclose(eager, lazy.compute())
    assert eager["n_clear_obs"].dtype == np.int32 and eager["share"].dtype == np.float32
    assert eager["share"].dims == ("y", "x")


def test_the_size_rule_counts_bare_pixels_not_grown_edges():
    import geopandas as gpd
    from shapely.geometry import box

    g = gpd.GeoDataFrame(
        {
            "bare_share": [1.0, 1.0],
            "green_share": [0.0, 0.0],
            "months_seen": [20, 20],
            "mean_slope_deg": [15.0, 15.0],
            "elongation": [1.2, 1.2],
            "area_m2": [2600.0, 2600.0],
            "core_area_m2": [1800.0, 2100.0],
        },
        geometry=[box(0, 0, 50, 52), box(1000, 0, 1050, 1052)],
        crs=32647,
    )
    out = classify.select_clearings(g, ClearingRules())
    assert out["core_area_m2"].tolist() == [2100.0]  # 18 bare pixels plus a grown rim is still too small


def test_a_clearing_cut_in_the_last_months_is_provisional_a_swidden_is_not():
    import geopandas as gpd
    from shapely.geometry import box

    n = 60  # months in the record
    rows = {  # name: (onset_month, last_month, months_seen, elongation)
        "old mine": (10, 59, 50, 1.2),
        "young mine": (55, 59, 5, 1.3),  # cut in August of the last year, bare to the end
        "swidden": (50, 54, 5, 1.3),  # cut in the dry season, green since the monsoon
        "young strip": (55, 59, 5, 4.0),  # a fresh landslide scar: long and thin
        "mine gone quiet": (40, 47, 8, 1.2),  # 8 months bare two years ago: the record could have shown more
    }
    g = gpd.GeoDataFrame(
        {
            "name": list(rows),
            "onset_month": [float(r[0]) for r in rows.values()],
            "last_month": [float(r[1]) for r in rows.values()],
            "months_seen": [r[2] for r in rows.values()],
            "elongation": [r[3] for r in rows.values()],
            "bare_share": 1.0,
            "green_share": 0.0,
            "mean_slope_deg": 15.0,
            "area_m2": 5000.0,
        },
        geometry=[box(i * 1000, 0, i * 1000 + 50, 100) for i in range(len(rows))],
        crs=32647,
    )
    months = pd.date_range("2020-01-01", periods=n, freq="MS")
    out = classify.select_clearings(g, ClearingRules(), months).set_index("name")
    assert out["persistent"].to_dict() == {
        "old mine": True,
        "young mine": False,
        "swidden": False,
        "young strip": False,
        "mine gone quiet": False,
    }
    assert out["provisional"][out["provisional"]].index.tolist() == ["young mine"]
    off = classify.select_clearings(g, ClearingRules(provisional_recent_months=0), months)
    assert not off["provisional"].any()
    # a record ending in April: a clearing first bare in February is a burnt swidden as much as a mine
    spring = pd.date_range("2020-01-01", periods=52, freq="MS")
    g2 = g.iloc[[1]].assign(onset_month=49.0, last_month=51.0, months_seen=3)  # Feb-Apr of the last year
    assert not classify.select_clearings(g2, ClearingRules(), spring)["provisional"].any()
    g3 = g.iloc[[1]].assign(onset_month=46.0, last_month=51.0, months_seen=6)  # cut in November: no swidden
    assert classify.select_clearings(g3, ClearingRules(), spring)["provisional"].all()


def test_a_clearing_is_dated_from_the_month_its_canopy_went_when_bare_follows_at_once():
    from pipeline.change import lead_onset

    bare = np.array([12, 12, 12, NONE, 30])
    open_ = np.array([11, 8, 13, 5, NONE])  # Dec before a January onset; 4 months before (a fallow); after; alone
    assert lead_onset(bare, open_, 2).tolist() == [11, 12, 12, NONE, 30]
    assert lead_onset(bare, open_, 0).tolist() == bare.tolist()
    # a November cut: canopy gone in December (month 11), bare in January: the pixel belongs to year 1
    valid = np.full((1, 24), 3)
    green = np.full((1, 24), 3)
    green[0, 11:] = 0
    bare_hits = np.zeros((1, 24), int)
    bare_hits[0, 12:] = 3
    b, _, _ = persistent_onset(valid, bare_hits, 24, 0.6, 3)
    o, _, _ = persistent_onset(valid, valid - green, 24, 0.6, 3)
    assert month_to_year(lead_onset(b, o, 2), pd.date_range("2021-01-01", periods=24, freq="MS")).tolist() == [2021]


def test_a_december_cut_is_dated_from_the_month_its_ndvi_fell():
    from pipeline.change import dip_onset
    from pipeline.lab.xarray_reference import dip_onset_maps

    months = 24
    valid = np.full((4, months), 2)
    ndvi = np.full((4, months), 0.83)
    ndvi[:, 12:] = 0.2  # bare from January of year 2 (onset 12) in every pixel
    ndvi[0, 11] = 0.6  # cut early in December: its views already thinner
    ndvi[1, 11] = 0.78  # haze or a late-December cut: within the forest's noise
    ndvi[2, 10:12] = 0.6  # felling from November
    valid[3, 11] = 0  # no clear view in December: nothing to date it by
    onset = np.full(4, 12)
    dip = dip_onset(onset, valid, ndvi * valid, lead=2, drop=0.1)
    assert dip.tolist() == [11, NONE, 10, NONE]
    assert dip_onset(np.array([NONE]), valid[:1], (ndvi * valid)[:1], 2, 0.1).tolist() == [NONE]
    assert dip_onset(onset, valid, ndvi * valid, lead=0, drop=0.1).tolist() == [NONE] * 4
    lazy = dip_onset_maps(
        xr.DataArray(onset.reshape(2, 2), dims=("y", "x")).chunk(1),
        xr.DataArray(valid.T.reshape(months, 2, 2), dims=("month", "y", "x")).chunk({"month": 6}),
        xr.DataArray((ndvi * valid).T.reshape(months, 2, 2), dims=("month", "y", "x")).chunk({"month": 6}),
        2,
        0.1,
    )
    assert lazy.compute().values.ravel().tolist() == dip.tolist()


def test_change_maps_take_a_record_as_stored_or_decoded():
    # the onset stage computes on the stored record (byte counts, int16 thousandths with a CF scale_factor);
    # every map must be what the decoded floats give: dates exactly, means to float32 rounding
    from pipeline.lab.xarray_reference import change_maps
    from pipeline.rules import ChangeConfig

    rng = np.random.default_rng(5)
    shape = (24, 6, 7)
    valid = rng.integers(1, 5, size=shape).astype(np.uint8)
    bare = valid.copy()
    bare[:8] = 0  # bare from month 8 everywhere: every pixel has an onset
    green = np.where(bare > 0, 0, valid).astype(np.uint8)
    ndvi = np.where(bare > 0, 0.1, 0.8) * valid
    ndvi[7] = 0.5 * valid[7]  # the canopy thinned the month before: a dip onset at 7
    sums = {"mndwi_sum": -0.3 * valid, "ndvi_sum": ndvi, "bsi_sum": np.where(bare > 0, 0.2, -0.2) * valid}
    dims = ("month", "y", "x")
    coords = {"month": pd.date_range("2021-01-01", periods=24, freq="MS")}
    counts = {
        "valid": (dims, valid),
        "pond": (dims, np.zeros(shape, np.uint8)),
        "bare": (dims, bare),
        "green": (dims, green),
    }
    stored = xr.Dataset(
        {**counts, **{k: (dims, np.rint(v * 1000).astype(np.int16), {"scale_factor": 0.001}) for k, v in sums.items()}},
        coords=coords,
    )
    decoded = xr.Dataset(
        {
            **{k: (dims, v.astype(np.int16)) for k, (_, v) in counts.items()},
            **{k: (dims, v.astype(np.float32)) for k, v in sums.items()},
        },
        coords=coords,
    )
    (_, bare_s, yearly_s), (_, bare_d, yearly_d) = (
        change_maps(stored, ChangeConfig()),
        change_maps(decoded, ChangeConfig()),
    )
    assert (bare_s["onset"] == 8).all() and (bare_s["dip_onset"] == 7).all()
    xr.testing.assert_identical(yearly_s, yearly_d)
    for k in ("onset", "last", "open_onset", "dip_onset", "n_clear_obs", "bare_share", "green_share"):
        xr.testing.assert_identical(bare_s[k], bare_d[k])
    for k in ("bsi_mean", "ndvi_mean"):
        np.testing.assert_allclose(bare_s[k], bare_d[k], rtol=1e-6)
    np.testing.assert_allclose(bare_s["bsi_mean"], 0.2, rtol=1e-6)


def test_change_maps_equal_the_xarray_functions_composed():
    # the onset stage's numpy core (change_arrays) against the lazy xarray functions an analyst composes
    # (onset_maps, share_while_active_maps, dip_onset_maps, evidence_maps): the same maps, to the bit
    from pipeline.lab.xarray_reference import change_maps, dip_onset_maps, evidence_maps, share_while_active_maps
    from pipeline.rules import ChangeConfig

    rng = np.random.default_rng(11)
    shape, ch = (36, 9, 8), ChangeConfig()
    valid = rng.integers(0, 5, size=shape).astype(np.uint8)
    counts = {k: np.minimum(valid, rng.integers(0, 5, size=shape)).astype(np.uint8) for k in ("pond", "bare", "green")}
    dims = ("month", "y", "x")
    monthly = xr.Dataset(
        {
            "valid": (dims, valid),
            **{k: (dims, v) for k, v in counts.items()},
            **{
                k: (dims, rng.integers(-900, 900, size=shape).astype(np.int16), {"scale_factor": 0.001})
                for k in count.INDEX_SUMS
            },
        },
        coords={"month": pd.date_range("2021-01-01", periods=36, freq="MS"), "y": np.arange(9.0), "x": np.arange(8.0)},
    )
    ponds, bare, yearly = change_maps(monthly, ch)
    m = monthly
    ref_ponds = onset_maps(m["valid"], m["pond"], ch.pond_window_months, ch.persistence, ch.min_observations)
    ref_bare = onset_maps(m["valid"], m["bare"], ch.clearing_window_months, ch.persistence, ch.min_observations)
    ref_bare["bare_share"] = share_while_active_maps(ref_bare, m["valid"], m["bare"])
    ref_bare["green_share"] = share_while_active_maps(ref_bare, m["valid"], m["green"])
    ref_bare["open_onset"] = onset_maps(
        m["valid"], m["valid"] - m["green"], ch.clearing_window_months, ch.persistence, ch.min_observations
    )["onset"]
    ref_bare["dip_onset"] = dip_onset_maps(
        ref_bare["onset"], m["valid"], m["ndvi_sum"], ch.clearing_lead_months, ch.clearing_ndvi_drop
    )
    ref_ponds = ref_ponds.merge(
        evidence_maps(ref_ponds, m["valid"], m["pond"], {"mndwi": m["mndwi_sum"], "ndvi": m["ndvi_sum"]})
    )
    ref_bare = ref_bare.merge(evidence_maps(ref_bare, m["valid"], None, {"bsi": m["bsi_sum"], "ndvi": m["ndvi_sum"]}))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_ponds["water_share_all"] = (
            m["pond"].sum("month", dtype=np.int32) / m["valid"].sum("month", dtype=np.int32)
        ).astype(np.float32)
    assert (ponds["onset"] >= 0).any() and (bare["onset"] >= 0).any()
    # the share of all clear views that showed water, onset or not
    assert float(ponds["water_share_all"][0, 0]) == pytest.approx(
        int(m["pond"][:, 0, 0].sum()) / int(m["valid"][:, 0, 0].sum())
    )
    xr.testing.assert_identical(ponds, ref_ponds)
    xr.testing.assert_identical(bare, ref_bare)
    xr.testing.assert_identical(yearly, xr_ref.yearly_counts(m["valid"]))
