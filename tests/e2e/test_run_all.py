"""``run --all``: every AOI config of a directory in turn, each with its own outputs; one AOI failing
leaves the others complete; a combined summary and index page beside the run dirs."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.belts import INDEX, SUMMARY_ALL, SUMMARY_DIR
from pipeline.cli import app
from pipeline.lab.simulate import simulate
from tests.support import run_checker


def write_config(path, sim, out):
    doc = {
        "aoi": str(sim.aoi),
        "name": path.stem,
        "period": {"start": sim.start.isoformat(), "end": sim.end.isoformat()},
        "source": {"kind": "local", "catalog": str(sim.catalog)},
        "out": str(out),
        "compute": {"workers": 2},
    }
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("sims")
    return [
        simulate(root / f"s{seed}", seed=seed, size_km=1.5, start_year=2021, end_year=2022, revisit_days=20)
        for seed in (3, 4)
    ]


def test_run_all_runs_every_aoi_and_one_failure_leaves_the_others_complete(sims, tmp_path):
    configs, outputs = tmp_path / "configs", tmp_path / "outputs"
    configs.mkdir()
    write_config(configs / "belt_a.yaml", sims[0], outputs / "belt_a")
    write_config(configs / "belt_b.yaml", sims[1], outputs / "belt_b")
    broken = dict(yaml.safe_load((configs / "belt_a.yaml").read_text()), name="belt_c", out=str(outputs / "belt_c"))
    broken["source"]["catalog"] = str(tmp_path / "missing" / "catalog.json")
    (configs / "belt_c.yaml").write_text(yaml.safe_dump(broken))
    (configs / "demo.yaml").write_text("not: [a config of --all")  # the demo's is never one of them

    res = CliRunner().invoke(app, ["run", "--all", "--config-dir", str(configs), "--quiet"])

    assert res.exit_code == 1, res.output  # one AOI failed
    for name in ("belt_a", "belt_b"):
        check = run_checker("check_run.py", outputs / name)
        assert check.returncode == 0, check.stdout + check.stderr
    assert not (outputs / "belt_c").exists()
    summary = outputs / SUMMARY_DIR
    table = pd.read_csv(summary / SUMMARY_ALL)
    assert set(table["aoi"]) == {"belt_a", "belt_b", "all"}
    each = [pd.read_csv(outputs / n / "yearly_summary.csv") for n in ("belt_a", "belt_b")]
    total = table[table["aoi"] == "all"].set_index("year")
    for column in ("sites_total", "ponds_total", "footprint_total_m2"):
        assert total[column].tolist() == pytest.approx(
            (each[0].set_index("year")[column] + each[1].set_index("year")[column]).tolist()
        )
    page = (summary / INDEX).read_text()
    assert 'href="../belt_a/report.html"' in page and 'href="../belt_b/report.html"' in page
    assert "belt_c" in page and "failed" in page and "belt-belt_a" in page  # the chart's line per belt
    assert (summary / "sites_per_belt.png").stat().st_size > 0


def test_all_refuses_a_single_aoi_option(tmp_path):
    res = CliRunner().invoke(app, ["run", "--all", "--config-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "drop --aoi, --out and --catalog" in str(res.exception)
    res = CliRunner().invoke(app, ["run", "--all", "--config-dir", str(tmp_path)])
    assert "no AOI configs (*.yaml) in" in str(res.exception)


def test_monthly_all_counts_nothing_new_as_success(sims, tmp_path):
    configs, outputs = tmp_path / "configs", tmp_path / "outputs"
    configs.mkdir()
    write_config(configs / "belt_a.yaml", sims[0], outputs / "belt_a")
    write_config(configs / "belt_b.yaml", sims[1], outputs / "belt_b")
    args = ["monthly", "--all", "--config-dir", str(configs), "--today", "2022-12-31", "--quiet"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    stamp = (outputs / "belt_a" / "run.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, args)  # nothing new for either AOI: not a failure
    assert again.exit_code == 0, again.output
    assert (outputs / "belt_a" / "run.json").stat().st_mtime_ns == stamp
    assert set(pd.read_csv(outputs / SUMMARY_DIR / SUMMARY_ALL)["aoi"]) == {"belt_a", "belt_b", "all"}
