"""``make bench-against REV=<commit>``: the bench AOI's run by this checkout and by another commit, in turns.

    python -m pipeline.lab.bench_against 0e01d8e [--turns 5] [--zarr] [--set outputs.evidence=false]

The other commit is checked out in a temporary git worktree and run with this checkout's interpreter and
packages, so only the code differs. Each turn runs both, in alternating order; the report is the median of
each and their ratio (this machine's speed drifts by 10-20% from minute to minute, so only ratios of runs
taken in turns mean anything).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline.lab.bench import BENCH_DIR, REPO, bench_aoi, pipeline_command


def timed_run(code_dir: Path, aoi: Path, catalog: Path, out: Path, extra: list[str]) -> float:
    """``make bench``'s pipeline step (2022-2023), run from ``code_dir``'s code."""
    cmd = [*pipeline_command(aoi, catalog, "2022-01-01", "2023-12-31", out), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=code_dir, env={**os.environ, "PYTHONPATH": str(code_dir)}, check=True)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit to compare with")
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument(
        "--zarr",
        action="store_true",
        help="the other commit keeps its composites (a fresh compute.composite_dir each run): before issue 20, "
        "the way to make it count into Zarr stores rather than raw records",
    )
    ap.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of this checkout's runs only, e.g. outputs.evidence=false against a commit without it",
    )
    args = ap.parse_args(argv)
    sim = bench_aoi()
    aoi = BENCH_DIR / "aoi-15km.geojson"
    aoi = aoi if aoi.is_file() else sim.aoi
    with tempfile.TemporaryDirectory(prefix="bench-against-") as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(other), args.rev], check=True)
        try:
            times: dict[str, list[float]] = {"this checkout": [], args.rev: []}
            for turn in range(args.turns):
                order = [("this checkout", REPO, False), (args.rev, other, args.zarr)]
                for name, code, zarr in order if turn % 2 == 0 else order[::-1]:
                    out = Path(tmp) / f"out-{turn}-{name.replace(' ', '-')}"
                    more = ["--set", f"compute.composite_dir={out}.composites"] if zarr else []
                    if code == REPO:
                        more += [a for kv in args.settings for a in ("--set", kv)]
                    times[name].append(timed_run(code, aoi, sim.catalog, out, more))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)], check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, runs in times.items():
        print(f"{name}: median {med[name]:.2f} s of {', '.join(f'{t:.2f}' for t in runs)}")
    print(f"this checkout / {args.rev}: {med['this checkout'] / med[args.rev]:.2f}x")


if __name__ == "__main__":
    main()
