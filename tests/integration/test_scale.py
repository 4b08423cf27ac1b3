"""Bounded memory by construction, the composite store, and the same outputs on a real dask cluster."""

import geopandas as gpd
import pytest

from pipeline.config import ComputeConfig
from pipeline.run import run
from tests.support import catalog_config


def test_onset_blocks_line_up_with_stored_chunks_and_shrink_as_the_period_grows():
    c = ComputeConfig(chunk_px=2048, onset_chunk_cells=16_000_000)
    assert c.store_chunk_px == 512
    assert [c.onset_chunk_px(n) for n in (12, 24, 60, 120, 240)] == [1024, 512, 512, 256, 256]
    for n in (12, 24, 60, 120, 240, 480):
        edge = c.onset_chunk_px(n)
        assert edge**2 * n <= 16_000_000  # memory per block does not grow with the period
        assert edge % 512 == 0 or 512 % edge == 0  # whole stored chunks, or whole fractions of one
    assert ComputeConfig(chunk_px=1000).store_chunk_px == 1000 and ComputeConfig(chunk_px=256).store_chunk_px == 256


def test_composites_are_reused_and_a_broken_store_is_recomputed(tiny_catalog, tmp_path):
    store = tmp_path / "composites"
    first = run(catalog_config(tiny_catalog, tmp_path / "a", **{"compute.composite_dir": store}))
    assert first.manifest["composite_years_reused"] == []
    assert len(list(store.glob("monthly-*.zarr"))) == 3
    again = run(catalog_config(tiny_catalog, tmp_path / "b", **{"compute.composite_dir": store}))
    assert again.manifest["composite_years_reused"] == [2021, 2022, 2023]
    # a store damaged on disk (a chunk file cut short) is detected and recomputed, not trusted
    victim = sorted(store.glob("monthly-2022-*.zarr"))[0]
    for meta in victim.rglob("zarr.json"):
        meta.write_text("{")
        break
    third = run(catalog_config(tiny_catalog, tmp_path / "c", **{"compute.composite_dir": store}))
    assert third.manifest["composite_years_reused"] == [2021, 2023]
    # a different classification setting is a different composite
    fourth = run(
        catalog_config(tiny_catalog, tmp_path / "d", **{"compute.composite_dir": store, "ponds.mndwi_min": 0.1})
    )
    assert fourth.manifest["composite_years_reused"] == []
    for out in "abc":
        assert (tmp_path / out / "yearly_summary.csv").read_bytes() == (
            tmp_path / "a" / "yearly_summary.csv"
        ).read_bytes()


def test_local_cluster_over_tcp_gives_identical_outputs(tiny_catalog, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = run(catalog_config(tiny_catalog, tmp_path / "threads"))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, protocol="tcp"
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = run(
            catalog_config(tiny_catalog, tmp_path / "cluster", **{"compute.scheduler": cluster.scheduler_address})
        )
    a, b = tmp_path / "threads", tmp_path / "cluster"
    assert (a / "yearly_summary.csv").read_bytes() == (b / "yearly_summary.csv").read_bytes()
    for layer in ("ponds", "clearings", "sites"):
        ga, gb = gpd.read_file(a / "footprints.gpkg", layer=layer), gpd.read_file(b / "footprints.gpkg", layer=layer)
        assert ga.drop(columns="geometry").equals(gb.drop(columns="geometry"))
        assert ga.geometry.geom_equals_exact(gb.geometry, tolerance=0).all()
    assert local.manifest["scenes_used"] == remote.manifest["scenes_used"]


def test_an_unreachable_scheduler_is_one_clear_error(tiny_catalog, tmp_path, monkeypatch):
    from pipeline import scheduler
    from pipeline.errors import PipelineError

    monkeypatch.setattr(scheduler, "SCHEDULER_TIMEOUT_S", 2)
    with pytest.raises(PipelineError, match="cannot reach the dask scheduler"):
        run(catalog_config(tiny_catalog, tmp_path / "x", **{"compute.scheduler": "tcp://127.0.0.1:9"}))
    assert not (tmp_path / "x").exists()


def test_a_mosaic_of_blocks_is_the_whole():
    # blocks of maps (y, x) and of yearly counts (year, y, x), placed in any order, as the threads finish them
    import numpy as np

    from pipeline.onset import Mosaic

    rng = np.random.default_rng(0)
    whole = {"onset": rng.integers(-1, 30, (5, 7)).astype(np.int16), "share": rng.random((5, 7), np.float32)}
    counts = {"valid": rng.integers(0, 9, (2, 5, 7)).astype(np.int16)}
    for arrays in (whole, counts):
        mosaic = Mosaic((5, 7))
        spans = [((r, min(r + 3, 5)), (c, min(c + 4, 7))) for r in (0, 3) for c in (0, 4)]
        for (r0, r1), (c0, c1) in spans[::-1]:
            mosaic.place({k: a[..., r0:r1, c0:c1] for k, a in arrays.items()}, (r0, r1), (c0, c1))
        assert mosaic.arrays.keys() == arrays.keys()
        for k, a in arrays.items():
            assert mosaic.arrays[k].dtype == a.dtype and (mosaic.arrays[k] == a).all()
