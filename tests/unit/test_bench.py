"""make bench's arithmetic: steps measured in turns, the fastest run kept, the scaling line."""

import pytest

from pipeline.lab import bench


def test_best_of_takes_turns_keeps_the_fastest_run_and_the_highest_memory(monkeypatch):
    calls, seconds = [], {"read": iter([3.0, 2.5, 2.8]), "pipeline": iter([9.0, 8.0, 8.5])}

    def fake(kind, *args):
        calls.append(kind)
        s = next(seconds[kind])
        return {"kind": kind, "seconds": s, "peak_rss_mb": 100 * s}

    monkeypatch.setattr(bench, "measure", fake)
    got = bench.best_of(3, {"read": ("read",), "pipeline": ("pipeline",)})
    assert calls == ["read", "pipeline"] * 3  # a slow spell hits both alike
    assert got["read"]["seconds"] == 2.5 and got["pipeline"]["seconds"] == 8.0
    assert got["read"]["peak_rss_mb"] == 300 and got["pipeline"]["runs_s"] == [9.0, 8.0, 8.5]


def test_linear_fit_recovers_a_line():
    rows = [{"pixel_obs": m * 1e6, "seconds": 3.0 + 0.05 * m} for m in (4, 18, 39, 70, 137)]
    fit = bench.linear_fit(rows)
    assert fit["fixed_s"] == pytest.approx(3.0) and fit["s_per_mpx_obs"] == pytest.approx(0.05) and fit["r2"] == 1.0
