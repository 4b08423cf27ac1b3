"""The whole pipeline on a small simulated AOI, scored against its truth, and the contracts checked."""

import json

from pipeline.lab.evaluate import evaluate
from pipeline.run import run
from tests.support import run_checker


def test_simulated_catalog_meets_input_contract(simulated_run):
    sim, _, _ = simulated_run
    check = run_checker("check_catalog.py", sim.catalog)
    assert check.returncode == 0, check.stdout


def test_run_meets_output_contract(simulated_run):
    _, cfg, _ = simulated_run
    check = run_checker("check_run.py", cfg.out)
    assert check.returncode == 0, check.stdout


def test_scores_against_truth(simulated_run):
    # a 2 km AOI over 3 years: 9 sites, so one site is 11% of F1; the 6 km demo is scored in the README
    sim, cfg, _ = simulated_run
    s = evaluate(cfg.out, sim.truth)
    assert s["sites"]["f1"] >= 0.85
    assert s["sites"]["first_year_exact"] >= 0.8
    assert s["ponds"]["detectable_precision"] >= 0.9
    assert s["clearings"]["area_iou"] >= 0.7
    assert s["confounders"]["all"]["fraction"] <= 0.1
    assert s["confounders"]["paddy"]["fraction"] <= 0.05


def test_rerun_gives_byte_identical_table(simulated_run, tmp_path):
    _, cfg, result = simulated_run
    run(cfg.model_copy(update={"out": tmp_path / "again"}))
    first = (cfg.out / "yearly_summary.csv").read_bytes()
    assert (tmp_path / "again" / "yearly_summary.csv").read_bytes() == first
    m1 = json.loads((cfg.out / "run.json").read_text())
    m2 = json.loads((tmp_path / "again" / "run.json").read_text())
    assert m1["outputs"]["yearly_summary.csv"]["sha256"] == m2["outputs"]["yearly_summary.csv"]["sha256"]
    assert m1["scenes_used"] == m2["scenes_used"] and len(m1["scenes_used"]) > 90
