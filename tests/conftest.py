"""The fixtures the suite shares: a tiny hand-made catalog, a simulated run made once per session, the
command line called in-process, and the --live option. Helpers live in tests/support.py."""

from __future__ import annotations

import sys
from datetime import datetime

import numpy as np
import pytest

from tests.support import FOREST, LATERITE, MILKY_WATER, uniform, write_aoi_file, write_catalog


@pytest.fixture
def tiny_catalog(tmp_path):
    """A 1 km AOI, one clear scene a month over 2021-2023: forest, with a laterite clearing cut in
    March 2022 on a slope and a 40 m milky pond dug into it in November 2022."""
    bounds = (436000.0, 2841000.0, 437000.0, 2842000.0)
    shape = (100, 100)
    scenes = []
    for year in (2021, 2022, 2023):
        for month in range(1, 13):
            when = datetime(year, month, 15)
            refl = uniform(FOREST, shape)
            if when >= datetime(2022, 3, 1):
                for b, v in LATERITE.items():
                    refl[b][30:60, 20:60] = v
            if when >= datetime(2022, 11, 1):
                for b, v in MILKY_WATER.items():
                    refl[b][40:44, 30:34] = v
            scenes.append({"datetime": when, "refl": refl})
    yy, xx = np.mgrid[0:100, 0:100]
    dem = (1500 + 3.0 * xx).astype(np.float32)  # rises 3 m per 10 m pixel eastward: a 16.7 degree slope
    cat = write_catalog(tmp_path / "cat", scenes, bounds=bounds, dem=dem)
    aoi = write_aoi_file(tmp_path / "aoi.geojson", bounds)
    return {"catalog": cat, "aoi": aoi, "bounds": bounds, "root": tmp_path}


def pytest_addoption(parser):
    parser.addoption(
        "--live",
        action="store_true",
        default=False,
        help="also run tests marked live, which reach Earth Search and Planetary Computer",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--live"):
        return
    skip = pytest.mark.skip(reason="reaches real services: run with --live")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def simulated_run(tmp_path_factory):
    """A 2 km simulated AOI over 2021-2023 (9 sites), run once for the whole session: the pipeline,
    export and report tests all read the same run dir."""
    from pipeline.config import load_config
    from pipeline.lab.simulate import simulate
    from pipeline.run import run

    root = tmp_path_factory.mktemp("sim")
    sim = simulate(root / "scenes", seed=1, size_km=2.0, start_year=2021, end_year=2023, revisit_days=10)
    cfg = load_config(None, sim.run_settings(root / "run"))
    result = run(cfg)
    return sim, cfg, result


@pytest.fixture
def cli(monkeypatch, capsys):
    """Call the command line in-process: returns (exit code, stdout, stderr)."""
    from pipeline.cli import main

    def call(*args):
        monkeypatch.setattr(sys, "argv", ["pipeline", *map(str, args)])
        with pytest.raises(SystemExit) as e:
            main()
            raise SystemExit(0)
        out = capsys.readouterr()
        return e.value.code, out.out, out.err

    return call
