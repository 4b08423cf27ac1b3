"""The fused count stage against its reference: the xarray formulation (clear_mask -> all_indices ->
pond_like / bare_like / green_like -> monthly_counts / monthly_sums) on the same scenes."""

import functools
from datetime import date, datetime

import dask
import numpy as np
import pytest
import xarray as xr

from pipeline import count, store
from pipeline.aoi import load_aoi
from pipeline.lab import xarray_reference as xr_ref
from pipeline.lab.simulate import simulate
from pipeline.rules import ClearingRules, MaskConfig, PondRules
from pipeline.sources.loading import load_reflectance, overpasses
from pipeline.sources.local_stac import LocalCatalogSource
from pipeline.store import EVIDENCE_BANDS, REFL_CODES
from tests.support import FOREST, uniform, write_aoi_file, write_catalog

INVALID = [0, 1, 3, 8, 9, 10]


def reference_counts(scenes, grid, start, end, buffer_px=3, hot_max=None, blue_max=None):
    cube = load_reflectance(scenes, grid, count.BANDS, 128)
    valid = xr_ref.clear_mask(cube, INVALID, buffer_px, count.BANDS)
    valid = valid & ~xr_ref.haze_mask(cube["blue"], cube["red"], hot_max, blue_max)
    ind = xr_ref.all_indices(cube)
    water = xr_ref.pond_like(ind, valid, PondRules(), cube["nir"])
    flags = {
        "valid": valid,
        "pond": water,
        "bare": xr_ref.bare_like(ind, valid, ClearingRules(), water),
        "green": xr_ref.green_like(ind, valid, ClearingRules()),
    }
    out = xr_ref.monthly_counts(flags, start, end)
    sums = xr_ref.monthly_sums({f"{k}_sum": ind[k] for k in ("mndwi", "ndvi", "bsi")}, valid, start, end)
    return out.assign(sums.data_vars).compute()


def fused_counts(scenes, grid, start, end, chunk_px, buffer_px=3, hot_max=None, blue_max=None):
    mask = MaskConfig(invalid_scl=INVALID, cloud_buffer_px=buffer_px, hot_max=hot_max, blue_max=blue_max)
    rules = count.observation_rules(mask, PondRules(), ClearingRules())
    return xr_ref.count_stage(overpasses(scenes, count.BANDS), grid, start, end, chunk_px, rules).compute()


def assert_same(fused, ref):
    for name in count.COUNTS:
        assert fused[name].dtype == np.int16
        np.testing.assert_array_equal(fused[name].values, ref[name].values, err_msg=name)
    for name in count.INDEX_SUMS:
        np.testing.assert_allclose(fused[name].values, ref[name].values, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated AOI: clouds, shadows, haze, nodata edges, ponds, clearings, swidden."""
    sim = simulate(
        tmp_path_factory.mktemp("sim") / "aoi", seed=3, size_km=1.2, start_year=2021, end_year=2021, revisit_days=10
    )
    aoi = load_aoi(sim.aoi)
    found = LocalCatalogSource(sim.catalog).search(aoi.geometry, date(2021, 1, 1), date(2021, 12, 31), 100)
    return aoi, found.scenes


@pytest.mark.parametrize("chunk_px", [64, 1024])
def test_fused_counts_equal_the_reference_on_simulated_scenes(simulated, chunk_px):
    # 64 px blocks put cloud buffers and the 20 m halo across block edges; 1024 is one block
    aoi, scenes = simulated
    with dask.config.set(scheduler="threads", num_workers=2):
        ref = reference_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31))
        fused = fused_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), chunk_px)
    assert fused["valid"].values.sum() > 0 and fused["pond"].values.sum() > 0 and fused["bare"].values.sum() > 0
    assert (fused["valid"].values < fused["valid"].values.max()).any()  # clouds were masked somewhere
    assert_same(fused, ref)


@pytest.mark.parametrize("buffer_px", [0, 1, 4])
def test_cloud_buffer_matches_the_reference_at_any_width(simulated, buffer_px):
    aoi, scenes = simulated
    scenes = scenes[:12]
    ref = reference_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), buffer_px)
    fused = fused_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), 64, buffer_px)
    assert_same(fused, ref)


@pytest.mark.parametrize("screen", [{"hot_max": 0.0}, {"blue_max": 0.08}])
def test_the_haze_screen_matches_the_reference(simulated, screen):
    aoi, scenes = simulated
    scenes = scenes[:12]
    ref = reference_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), **screen)
    fused = fused_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), 64, **screen)
    plain = fused_counts(scenes, aoi.grid, date(2021, 1, 1), date(2021, 12, 31), 64)
    assert fused["valid"].values.sum() < plain["valid"].values.sum()  # the screen removed views
    assert_same(fused, ref)


BOUNDS = (436000.0, 2841000.0, 436400.0, 2841400.0)


def _catalog_scenes(tmp_path, scenes, bounds=BOUNDS, epsg=32647):
    cat = write_catalog(tmp_path / "cat", scenes, bounds=bounds, epsg=epsg)
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    return aoi, LocalCatalogSource(cat).search(aoi.geometry, date(2020, 1, 1), date(2023, 12, 31), 100).scenes


def test_a_cloud_at_a_block_edge_is_buffered_into_the_next_block(tmp_path):
    scl = np.full((20, 20), 4, np.uint8)
    scl[8, 9] = 9  # one 20 m cloud pixel
    aoi, scenes = _catalog_scenes(
        tmp_path, [{"datetime": datetime(2021, 5, 1), "refl": uniform(FOREST, (40, 40)), "scl": scl}]
    )
    for chunk_px in (8, 16, 64):
        valid = fused_counts(scenes, aoi.grid, date(2021, 5, 1), date(2021, 5, 31), chunk_px)["valid"].values[0]
        clouded = np.argwhere(valid == 0)
        # 2 x 2 pixels of cloud grown by 3 on each side: an 8 x 8 square, whichever blocks it spans
        assert len(clouded) == 64, chunk_px
        assert (clouded.max(axis=0) - clouded.min(axis=0)).tolist() == [7, 7]


def test_scenes_from_another_utm_zone_are_warped_onto_the_grid(tmp_path):
    from pyproj import Transformer

    t = Transformer.from_crs(32647, 32646, always_xy=True)
    x0, y0 = t.transform(BOUNDS[0] - 200, BOUNDS[1] - 200)
    x0, y0 = round(x0 / 20) * 20, round(y0 / 20) * 20
    scenes = [{"datetime": datetime(2021, 5, 1), "refl": uniform(FOREST, (88, 88))}]
    aoi, found = _catalog_scenes(tmp_path, scenes, bounds=(x0, y0, x0 + 880, y0 + 880), epsg=32646)
    out = fused_counts(found, aoi.grid, date(2021, 5, 1), date(2021, 5, 31), 16)
    assert (out["valid"].values == 1).all() and (out["green"].values == 1).all()  # forest, seen once, everywhere
    ndvi = out["ndvi_sum"].values[0]
    want = (FOREST["nir"] - FOREST["red"]) / (FOREST["nir"] + FOREST["red"])
    np.testing.assert_allclose(ndvi, want, atol=2e-3)


def test_two_tiles_of_one_overpass_are_fused_first_valid(tmp_path):
    left = uniform(FOREST, (40, 40))
    for b in left:
        left[b][:, 20:] = np.nan  # the first tile covers the west half only
    import pystac

    when = datetime(2021, 5, 1, 4, 0)
    cat = write_catalog(
        tmp_path / "cat",
        [{"datetime": when, "refl": left}, {"datetime": when, "refl": uniform(FOREST, (40, 40))}],
        bounds=BOUNDS,
    )
    aoi = load_aoi(write_aoi_file(tmp_path / "aoi.geojson", BOUNDS, inset=40.0))
    scenes = sorted(pystac.Catalog.from_file(cat).get_items(recursive=True), key=lambda it: it.id)
    days = overpasses(scenes, count.BANDS)
    assert len(days) == 1 and len(days[0].hrefs["red"]) == 2
    out = fused_counts(scenes, aoi.grid, date(2021, 5, 1), date(2021, 5, 31), 16)
    assert (out["valid"].values == 1).all()


def test_months_without_a_scene_are_zero_and_the_stage_is_lazy(tmp_path):
    aoi, scenes = _catalog_scenes(tmp_path, [{"datetime": datetime(2021, 3, 5), "refl": uniform(FOREST, (40, 40))}])
    rules = count.observation_rules(MaskConfig(invalid_scl=INVALID), PondRules(), ClearingRules())
    lazy = xr_ref.count_stage(overpasses(scenes, count.BANDS), aoi.grid, date(2021, 1, 1), date(2021, 6, 30), 16, rules)
    assert lazy["valid"].chunks is not None and lazy.sizes["month"] == 6
    valid = lazy["valid"].values
    assert valid[2].all() and not valid[[0, 1, 3, 4, 5]].any()


@pytest.mark.parametrize("keep", [1 / 3, 0.9])
def test_a_truncated_file_fails_loudly_not_as_missing_pixels(tmp_path, keep):
    import rasterio

    from pipeline.errors import SourceError

    aoi, scenes = _catalog_scenes(tmp_path, [{"datetime": datetime(2021, 3, 5), "refl": uniform(FOREST, (40, 40))}])
    nir = scenes[0].assets["nir"].get_absolute_href()
    data = open(nir, "rb").read()
    open(nir, "wb").write(data[: int(len(data) * keep)])
    with pytest.raises((SourceError, rasterio.RasterioIOError)):
        fused_counts(scenes, aoi.grid, date(2021, 3, 1), date(2021, 3, 31), 16)


def test_a_run_writes_the_count_stage_into_its_store_block_by_block(simulated, tmp_path):
    # what a run persists (tasks writing their own blocks, 32 px chunks, so several per block) is what
    # the lazy stage computes, every month present (zero without a scene)
    import zarr

    from pipeline.store import create_layers, open_layers, read_layers, write_block

    aoi, scenes = simulated
    rules = count.observation_rules(MaskConfig(invalid_scl=INVALID), PondRules(), ClearingRules())
    days, start, end = overpasses(scenes, count.BANDS), date(2021, 1, 1), date(2022, 2, 28)  # 2022: no scene
    lazy = xr_ref.count_stage(days, aoi.grid, start, end, 64, rules).compute()
    months, y, x = lazy["month"].values, lazy["y"].values, lazy["x"].values
    path = tmp_path / "store.zarr"
    create_layers(path, months, y, x, 32, 64, {})
    write = functools.partial(write_block, open_layers(path, write=True))
    dask.compute(count.count_tasks(write, path.name, days, aoi.grid, start, end, 64, rules))
    whole = (0, len(y)), (0, len(x))
    stored = read_layers([(open_layers(path), len(months))], *whole)
    for name in count.COUNT_LAYERS:
        if name in count.COUNTS:  # kept exactly, as bytes
            assert zarr.open_array(f"{path}/{name}", mode="r").dtype == stored[name].dtype == np.uint8
            np.testing.assert_array_equal(stored[name], lazy[name].values, err_msg=name)
        else:  # kept to a thousandth, as int16
            assert stored[name].dtype == np.int16
            np.testing.assert_allclose(stored[name] / 1000, lazy[name].values, rtol=0, atol=0.0005 + 1e-6, err_msg=name)
    assert len(list((path / "valid").glob("0.*"))) == 4  # one shard per month and 64 px block, not per chunk
    opened = xr.open_zarr(path, consolidated=False)  # what an analyst opens: coordinates and sums decoded
    assert (opened["month"].values == months).all() and (opened["x"].values == x).all()
    np.testing.assert_allclose(opened["ndvi_sum"].values, lazy["ndvi_sum"].values, rtol=0, atol=0.0005 + 1e-6)
    assert stored["valid"][:12].any() and not stored["valid"][12:].any()
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        plain = read_layers([(open_layers(path), len(months))], *whole)  # without zarrs
    for name in count.COUNT_LAYERS:
        np.testing.assert_array_equal(plain[name], stored[name], err_msg=name)


def test_months_with_the_most_overpasses_are_counted_first(simulated, tmp_path, monkeypatch):
    # so the last task of the stage is a short one, not a long one with the other thread idle
    aoi, scenes = simulated
    days = overpasses(scenes, count.BANDS)
    done = []
    monkeypatch.setattr(count, "_count_into", lambda write, months, *a: done.append(sum(len(t) for _, t in months)))
    tasks = count.count_tasks(
        None,
        "store",
        days,
        aoi.grid,
        date(2021, 1, 1),
        date(2021, 12, 31),
        64,
        count.observation_rules(MaskConfig(), PondRules(), ClearingRules()),
    )
    dask.compute(tasks, scheduler="threads", num_workers=1)
    assert len(done) == len(tasks) and len(set(done)) > 1
    assert done == sorted(done, reverse=True)


def test_a_failed_count_leaves_no_store_behind(tmp_path):
    import pandas as pd

    from pipeline.store import CompositeStore

    def fill(path):
        assert path.is_dir()
        raise OSError("disk full")

    store = CompositeStore(tmp_path)
    with pytest.raises(OSError):
        store.save(
            2022, "k", pd.date_range("2022-01-01", periods=2, freq="MS"), np.arange(4.0), np.arange(4.0), 4, 4, fill
        )
    assert list(tmp_path.iterdir()) == []


def test_a_store_shard_is_no_larger_than_the_grid_in_whole_chunks(tmp_path):
    # zarr fills a shard the grid ends inside with zeros before writing a block into it, and encodes its
    # chunks beyond the grid as well: a 100 x 70 px grid in 32 px chunks gets 128 x 96 px shards, not 256
    import zarr

    from pipeline.store import create_layers

    months = count.month_starts(date(2021, 1, 1), date(2021, 2, 1))
    create_layers(tmp_path / "s.zarr", months, np.arange(100.0), np.arange(70.0), 32, 256, {})
    assert zarr.open_array(tmp_path / "s.zarr" / "valid", mode="r").shards == (1, 128, 96)
    create_layers(tmp_path / "t.zarr", months, np.arange(600.0), np.arange(70.0), 32, 256, {})
    assert zarr.open_array(tmp_path / "t.zarr" / "valid", mode="r").shards == (1, 256, 96)


def test_scratch_gives_each_thread_its_own_memory_again_and_again():
    import pickle
    import threading

    scratch = count.Scratch()
    a = scratch.array("counts", (2, 3, 4), np.int16)
    a[:] = 7
    again = scratch.array("counts", (2, 3, 4), np.int16)
    assert np.shares_memory(a, again) and (again == 7).all()  # the same memory, as left
    smaller = scratch.array("counts", (3, 2), np.float32)  # a smaller block reuses it
    assert np.shares_memory(a, smaller) and smaller.shape == (3, 2) and smaller.dtype == np.float32
    assert not np.shares_memory(a, scratch.array("sums", (2, 3, 4), np.int16))  # another name, other memory
    larger = scratch.array("counts", (4, 3, 4), np.int16)  # outgrown: new memory
    assert larger.shape == (4, 3, 4) and not np.shares_memory(a, larger)
    other = []
    t = threading.Thread(target=lambda: other.append(scratch.array("counts", (4, 3, 4), np.int16)))
    t.start()
    t.join()
    assert not np.shares_memory(larger, other[0])  # another thread, its own
    assert pickle.loads(pickle.dumps(scratch))._buffers == {}  # a worker elsewhere starts empty


def test_a_block_read_into_reused_memory_has_zeros_for_a_year_without_scenes(tmp_path):
    # the scratch memory holds the previous block's record: a year with no store must be zeroed, not left
    from pipeline.store import create_layers, open_layers, read_layers, write_block

    months = count.month_starts(date(2021, 1, 1), date(2021, 2, 28))
    create_layers(tmp_path / "s.zarr", months, np.arange(8.0), np.arange(8.0), 4, 8, {})
    path = open_layers(tmp_path / "s.zarr", write=True)
    write_block(path, 0, (0, 8), (0, 8), np.full((4, 8, 8), 3, np.int16), np.full((3, 8, 8), 0.5, np.float32))
    scratch = count.Scratch()
    for raw in read_layers([(path, 2), (path, 2)], (0, 8), (0, 8), scratch).values():
        raw[:] = 9  # what the previous block left
    record = read_layers([(None, 2), (path, 2)], (0, 8), (0, 8), scratch)
    fresh = read_layers([(None, 2), (path, 2)], (0, 8), (0, 8))
    for name, raw in record.items():
        assert not raw[:2].any(), name
        np.testing.assert_array_equal(raw, fresh[name], err_msg=name)
    assert (record["valid"][2] == 3).all() and not record["valid"][3].any()


def test_the_count_kernel_on_a_block_of_odd_width_is_the_even_block_cut():
    # the kernel reads the 20 m bands two 10 m columns at a time; a block of odd width (which the count
    # stage never makes) gets its last column all the same
    rules = count.observation_rules(MaskConfig(invalid_scl=INVALID), PondRules(), ClearingRules())
    rng = np.random.default_rng(5)
    h, w, halo = 10, 14, 2
    dn10 = rng.integers(1, 4000, (4, h, w)).astype(np.uint16)
    swir = rng.integers(1, 4000, (h // 2 + 2 * halo, w // 2 + 2 * halo)).astype(np.uint16)
    scl = np.where(rng.random(swir.shape) < 0.9, 4, rng.choice(np.array([0, 5, 6], np.uint8), swir.shape)).astype(
        np.uint8
    )
    scale_offset = np.array([[1e-4, -0.1]] * 5, np.float32)
    out = {}
    for width in (w, w - 1):
        counts, sums = np.zeros((4, h, width), np.int16), np.zeros((3, h, width), np.float32)
        count.accumulate_scene(
            np.ascontiguousarray(dn10[:, :, :width]),
            scale_offset,
            swir,
            scl,
            halo,
            rules.cloud,
            rules.other,
            rules.buffer_px,
            rules.thresholds,
            counts,
            sums,
            count.NO_EVIDENCE,
        )
        out[width] = counts, sums
    assert out[w][0].any()
    np.testing.assert_array_equal(out[w - 1][0], out[w][0][:, :, : w - 1])
    np.testing.assert_array_equal(out[w - 1][1], out[w][1][:, :, : w - 1])


def test_the_dry_season_evidence_is_the_mean_of_its_clear_views_and_leaves_the_counts_alone(simulated, tmp_path):
    """With evidence on, a year's store holds the mean reflectance of exactly the views the count calls
    clear (the reference's clear mask) in the dry-season months, from the same reads; the monthly
    counts and sums are those of a count without it."""
    aoi, scenes = simulated
    cube = load_reflectance(scenes, aoi.grid, count.BANDS, 128).compute()
    clear = xr_ref.clear_mask(cube, INVALID, 3, count.BANDS).compute()
    rules = count.observation_rules(MaskConfig(invalid_scl=INVALID, cloud_buffer_px=3), PondRules(), ClearingRules())
    start, end = date(2021, 1, 1), date(2021, 12, 31)
    months = count.month_starts(start, end)
    y, x = aoi.grid.coords["y"].values, aoi.grid.coords["x"].values
    dry = frozenset({1, 2, 3, 11, 12})
    stores = {}
    for name, evidence in (("plain", False), ("evidence", True)):
        path = tmp_path / f"{name}.zarr"
        store.create_layers(path, months, y, x, 64, 128, {}, evidence=evidence)
        layers = store.open_layers(path, write=True)
        write_evidence = functools.partial(store.write_evidence, layers) if evidence else None
        tasks = count.count_tasks(
            functools.partial(store.write_block, layers),
            name,
            overpasses(scenes, count.BANDS),
            aoi.grid,
            start,
            end,
            128,
            rules,
            evidence_months=dry,
            write_evidence=write_evidence,
        )
        dask.compute(tasks, scheduler="threads", num_workers=2)
        stores[name] = store.open_layers(path)
    for name in count.COUNT_LAYERS:
        np.testing.assert_array_equal(stores["plain"][name][:], stores["evidence"][name][:], err_msg=name)
    in_dry = np.isin(cube.time.dt.month, sorted(dry))
    views = clear.isel(time=in_dry)
    n = views.sum("time").values
    for band, layer in zip(EVIDENCE_BANDS, store.EVIDENCE_LAYERS):
        mean = cube[band].isel(time=in_dry).where(views).sum("time").values / np.maximum(n, 1) * REFL_CODES
        expected = np.where(n > 0, 1 + np.clip(np.rint(mean), 0, 254), 0)
        got = stores["evidence"][layer][0]
        assert (np.abs(got.astype(int) - expected) > 1).mean() < 1e-4, band  # float32 sums, rounding
    assert (n > 0).sum() > 1000
