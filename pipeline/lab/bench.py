"""``make bench``: how fast and how lean the pipeline is, measured against baselines in the same run.

    python -m pipeline.lab.bench            # builds the bench AOI once (cached), measures, writes reports/bench.md

Everything is timed in a fresh subprocess while the process tree's resident memory is sampled, so
every figure includes start-up and every number is comparable to the others of the same run:

- read floor: just reading and decoding every band the pipeline uses, for the scenes it uses, with
  as many threads as the pipeline (rasterio, windowed to the AOI);
- pipeline: ``python -m pipeline run`` end to end on the same data (no composite reuse), the command
  itself, start-up and exit included;
- baseline: the notebook way on the largest AOI it can hold (its cube in half this machine's memory):
  the whole cube loaded into numpy with odc-stac, masked yearly medians of the indices, thresholds,
  first year flagged, vectorised; the pipeline is timed on the same AOI beside it;
- scaling: the pipeline on 4 AOI sizes x 2 period lengths.

Machines are noisy, so the report gives ratios within one run (pipeline / read floor, baseline /
pipeline) beside the raw seconds.
"""

from __future__ import annotations

import compileall
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

BENCH_DIR = Path(os.environ.get("KACHIN_BENCH_DIR", Path.home() / ".cache" / "kachin-watch" / "bench"))
REPO = Path(__file__).resolve().parents[2]
SIZES_KM = (3.75, 7.5, 11.25, 15.0)
PERIODS = {"1 year": ("2023-01-01", "2023-12-31"), "2 years": ("2022-01-01", "2023-12-31")}
BASELINE_BYTES_PER_PX_OBS = 100  # the notebook's cube: uint16 bands, float64 reflectance and indices, temporaries
WORKERS = os.cpu_count() or 2
REPEATS = 3  # the read floor, the 15 km pipeline and the scaling series: the fastest of 3 (2 for the baseline)


# ------------------------------------------------------------------------------------------ set-up


def bench_aoi():
    """The bench AOI: simulated, 15 km x 15 km, 2022-2023, a scene every 10 days. Built once."""
    from pipeline.lab.simulate import simulate

    return simulate(
        BENCH_DIR / "aoi-15km", seed=7, size_km=15.0, start_year=2022, end_year=2023, revisit_days=10, reuse=True
    )


def baseline_km(n_scenes: int) -> float:
    """The largest bench size whose notebook cube fits in half of this machine's memory."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fits = [k for k in SIZES_KM if (k * 100) ** 2 * n_scenes * BASELINE_BYTES_PER_PX_OBS <= ram / 2]
    return max(fits, default=SIZES_KM[0])


def sub_aoi(sim, size_km: float) -> Path:
    """A centred square of ``size_km`` inside the bench AOI, as a GeoJSON file beside it."""
    import geopandas as gpd
    from shapely.geometry import box

    from pipeline.aoi import write_aoi

    path = BENCH_DIR / f"aoi-{size_km:g}km.geojson"
    if not path.is_file():
        utm = gpd.read_file(sim.aoi).to_crs(32647).geometry.iloc[0]
        c, half = utm.centroid, size_km * 500.0
        g = gpd.GeoSeries([box(c.x - half, c.y - half, c.x + half, c.y + half)], crs=32647).to_crs(4326).iloc[0]
        write_aoi(path, g, name=f"bench-{size_km:g}km", simulated=True)
    return path


# ------------------------------------------------------------------------- workers (in subprocesses)


def _scenes(aoi_path: Path, catalog: Path, start: str, end: str):
    from pipeline.aoi import load_aoi
    from pipeline.config import SourceConfig
    from pipeline.sources.local_stac import LocalCatalogSource

    aoi = load_aoi(aoi_path)
    found = LocalCatalogSource(catalog).search(
        aoi.geometry, date.fromisoformat(start), date.fromisoformat(end), SourceConfig().max_cloud_cover
    )
    return aoi, found.scenes


def work_read(aoi_path, catalog, start, end) -> dict:
    import rasterio
    from rasterio.windows import from_bounds

    from pipeline import count

    aoi, scenes = _scenes(aoi_path, catalog, start, end)
    hrefs = [it.assets[b].get_absolute_href() for it in scenes for b in [*count.BANDS, "scl"]]
    bounds = aoi.grid.boundingbox

    def read(href):
        with rasterio.open(href) as src:
            return src.read(1, window=from_bounds(*bounds, transform=src.transform)).nbytes

    with ThreadPoolExecutor(WORKERS) as pool:
        nbytes = sum(pool.map(read, hrefs))
    return {
        "files": len(hrefs),
        "decoded_mb": round(nbytes / 1e6, 1),
        "scenes": len(scenes),
        "pixels": int(aoi.grid.shape.x * aoi.grid.shape.y),
    }


def pipeline_command(aoi_path, catalog, start, end, out: Path) -> list[str]:
    """The pipeline step is the command users run, start-up and exit included."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--aoi",
        str(aoi_path),
        "--source",
        "local",
        "--catalog",
        str(catalog),
        "--start",
        start,
        "--end",
        end,
        "--out",
        str(out),
        "--quiet",
    ]


def pipeline_result(run_dir: Path) -> dict:
    """What a finished run reports of itself (its run.json)."""
    m = json.loads((run_dir / "run.json").read_text())
    pixels = m["grid"]["shape"][0] * m["grid"]["shape"][1]
    return {"scenes": m["n_scenes_used"], "pixels": pixels, "stages_s": m["timings_s"], "sites": m["counts"]["sites"]}


def work_baseline(aoi_path, catalog, start, end) -> dict:
    """What a notebook does: the whole cube in memory, yearly masked medians, thresholds."""
    import numpy as np
    import odc.stac
    import rasterio.features

    from pipeline.rules import ClearingRules, MaskConfig, PondRules
    from pipeline.sources.base import scale_offset

    aoi, scenes = _scenes(aoi_path, catalog, start, end)
    bands = ["blue", "green", "red", "nir", "swir16"]
    ds = odc.stac.load(
        scenes,
        bands=[*bands, "scl"],
        geobox=aoi.grid,
        groupby="solar_day",
        resampling={"scl": "nearest", "*": "bilinear"},
        pool=WORKERS,
    )
    offset = np.array([scale_offset(s, "red")[1] for s in scenes][: ds.sizes["time"]])[:, None, None]
    r = {b: np.where(ds[b].values == 0, np.nan, ds[b].values * 0.0001 + offset) for b in bands}
    # the run's own default thresholds, so the baseline differs from a run in its method only
    mask, ponds, bare = MaskConfig(), PondRules(), ClearingRules()
    valid = ~np.isin(ds["scl"].values, mask.invalid_scl)

    def nd(a, b):  # a normalised difference, as a notebook would write it
        return (a - b) / (a + b)

    ndvi = np.where(valid, nd(r["nir"], r["red"]), np.nan)
    mndwi = np.where(valid, nd(r["green"], r["swir16"]), np.nan)
    bsi = np.where(valid, nd(r["swir16"] + r["red"], r["nir"] + r["blue"]), np.nan)
    years = ds.time.dt.year.values
    first = {"pond": np.zeros(ndvi.shape[1:], np.int16), "bare": np.zeros(ndvi.shape[1:], np.int16)}
    for y in np.unique(years):
        sel = years == y
        med = {k: np.nanmedian(v[sel], axis=0) for k, v in (("ndvi", ndvi), ("mndwi", mndwi), ("bsi", bsi))}
        for name, seen in (
            ("pond", (med["mndwi"] > ponds.mndwi_min) & (med["ndvi"] < ponds.ndvi_max)),
            ("bare", (med["ndvi"] < bare.ndvi_max) & (med["bsi"] > bare.bsi_min)),
        ):
            first[name][(first[name] == 0) & seen] = y
    n = 0
    for fy in first.values():
        n += sum(1 for _ in rasterio.features.shapes(fy, mask=fy > 0, transform=aoi.grid.affine))
    return {"scenes": len(scenes), "pixels": int(aoi.grid.shape.x * aoi.grid.shape.y), "polygons": n}


WORK = {"read": work_read, "baseline": work_baseline}


# ------------------------------------------------------------------------------------ measurement


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total / 1024


def best_of(repeats: int, steps: dict[str, tuple]) -> dict[str, dict]:
    """Each of ``steps`` (name -> ``measure``'s arguments) ``repeats`` times, taking turns so that a
    slow spell of the machine hits every step alike: per step, the fastest run's figures (noise only
    ever adds time), the highest peak memory of all its runs, and every run's seconds."""
    runs: dict[str, list[dict]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, args in steps.items():
            runs[name].append(measure(*args))
    return {
        name: {
            **min(rs, key=lambda r: r["seconds"]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "runs_s": [r["seconds"] for r in rs],
        }
        for name, rs in runs.items()
    }


def linear_fit(scaling: list[dict]) -> dict:
    """Least squares of seconds against pixel-observations over the scaling series."""
    import numpy as np

    x = np.array([r["pixel_obs"] for r in scaling]) / 1e6
    y = np.array([r["seconds"] for r in scaling])
    slope, fixed = np.polyfit(x, y, 1)
    r2 = 1 - ((y - (fixed + slope * x)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"fixed_s": round(float(fixed), 2), "s_per_mpx_obs": round(float(slope), 4), "r2": round(float(r2), 3)}


def measure(kind: str, aoi_path: Path, catalog: Path, start: str, end: str) -> dict:
    """Run one worker in a fresh process; wall time and the tree's peak RSS, plus what it reports."""
    args = json.dumps([kind, str(aoi_path), str(catalog), start, end])
    scratch = tempfile.TemporaryDirectory()
    run_dir = Path(scratch.name) / "run"
    cmd = (
        pipeline_command(aoi_path, catalog, start, end, run_dir)
        if kind.startswith("pipeline")
        else [sys.executable, "-m", "pipeline.lab.bench", "--worker", args]
    )
    if kind == "pipeline_no_evidence":
        cmd += ["--set", "outputs.evidence=false"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    peak = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    with scratch:
        if proc.returncode != 0:
            raise SystemExit(
                f"bench step {kind} failed (exit {proc.returncode}); run it alone to see why: " + " ".join(cmd)
            )
        result = pipeline_result(run_dir) if kind.startswith("pipeline") else json.loads(out.strip().splitlines()[-1])
    px_obs = result["pixels"] * result["scenes"]
    return {
        "kind": kind,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak),
        "pixel_obs": px_obs,
        "mpx_obs_per_s": round(px_obs / seconds / 1e6, 2),
        **result,
    }


# frames on top of a stack that mean a thread is waiting (a pool worker blocked on its queue, a lock,
# the event loop of zarr's I/O threads), not working: left out of the shares
WAITING = {
    "_worker",
    "wait",
    "select",
    "_write_to_self",
    "acquire",
    "get",
    "sleep",
    "_wait_for_tstate_lock",
    "run_forever",
    "_run_once",
    "result",
    "join",
}


def _frame(f: str) -> str:
    """'function (path/file.py:line)' -> 'function (file path)', the repository's prefix dropped."""
    name, _, where = f.partition(" (")
    return f"{name} ({where.split(':')[0].replace(str(REPO) + '/', '')})"


def profile_pipeline(aoi_path: Path, catalog: Path, start: str, end: str, out: Path) -> dict:
    """Where the pipeline's time goes: py-spy samples every thread of the pipeline step at 100 Hz into
    a flame graph (``out``, SVG) and collapsed stacks. Returns, over the samples of threads that were
    working (not waiting), the functions most often on top of the stack (``self``) and the pipeline's
    own functions by share of samples below them (``inclusive``). Empty if py-spy is not installed."""
    import shutil
    from collections import Counter

    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spy is None:
        print("py-spy not installed: no profile (pip install py-spy)", flush=True)
        return {}
    self_time, inclusive, total = Counter(), Counter(), 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = pipeline_command(aoi_path, catalog, start, end, Path(tmp) / "run")
        raw = Path(tmp) / "stacks.txt"
        for fmt, dest in (("flamegraph", out), ("raw", raw)):
            subprocess.run(
                [spy, "record", "--threads", "-r", "100", "--format", fmt, "-o", str(dest), "--", *cmd],
                check=True,
                cwd=REPO,
                capture_output=True,
            )
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = [_frame(f) for f in stack.split(";") if " (" in f]
            if not frames or frames[-1].split(" (")[0].split(".")[-1] in WAITING:
                continue
            total += int(n)
            self_time[frames[-1]] += int(n)
            for f in {f for f in frames if "(pipeline/" in f}:
                inclusive[f] += int(n)

    def share(c):
        return [(f, round(k / max(total, 1), 3)) for f, k in c.most_common(12)]

    return {"self": share(self_time), "inclusive": share(inclusive), "samples": total}


# ------------------------------------------------------------------------------------------ report


def write_report(path: Path, head: dict, scaling: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for label in PERIODS:
        rows = [r for r in scaling if r["period"] == label]
        ax[0].plot([r["pixel_obs"] / 1e6 for r in rows], [r["seconds"] for r in rows], "o-", label=label)
        ax[1].plot([r["pixel_obs"] / 1e6 for r in rows], [r["peak_rss_mb"] for r in rows], "o-", label=label)
    ax[0].set(xlabel="pixel-observations (millions)", ylabel="wall time (s)", title="time")
    ax[1].set(xlabel="pixel-observations (millions)", ylabel="peak RSS (MB)", title="memory")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=90)

    r, p, b, ps = head["read"], head["pipeline"], head["baseline"], head["pipeline_small"]
    bkm, off = head["baseline_km"], head["pipeline_no_evidence"]
    lines = [
        "# Benchmark",
        "",
        f"Made by `make bench` on {head['machine']} ({WORKERS} cores), {head['when']}. Simulated bench AOI "
        "15 km x 15 km, 2022-2023, a scene every 10 days (cached in `$KACHIN_BENCH_DIR`, default "
        "`~/.cache/kachin-watch/bench`). Times include process start-up and exit, each the fastest of "
        f"{REPEATS} runs (2 for the notebook baseline and the pipeline beside it), the steps compared taking "
        "turns; memory "
        "is the highest peak resident set of the process tree over those runs.",
        "",
        "| step | AOI | scenes | pixel-obs (M) | s | M px-obs/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row, size in (
        ("read floor", r, "15 km"),
        ("pipeline", p, "15 km"),
        ("pipeline, outputs.evidence=false", off, "15 km"),
        ("notebook baseline", b, f"{bkm:g} km"),
        ("pipeline", ps, f"{bkm:g} km"),
    ):
        lines.append(
            f"| {label} | {size} | {row['scenes']} | {row['pixel_obs'] / 1e6:.0f} | {row['seconds']} | "
            f"{row['mpx_obs_per_s']} | {row['peak_rss_mb']} |"
        )
    lines += [
        "",
        f"- pipeline / read floor: **{p['seconds'] / r['seconds']:.2f}x** (target <= 2x)",
        f"- evidence (composites and chips) on / off: **{p['seconds'] / off['seconds']:.2f}x** "
        f"(target <= 1.10x); memory {p['peak_rss_mb']} MB vs {off['peak_rss_mb']} MB",
        f"- baseline / pipeline, same {bkm:g} km AOI (the largest whose notebook cube fits in half the memory): "
        f"**{b['seconds'] / ps['seconds']:.2f}x** faster "
        f"(target >= 3x); memory {b['peak_rss_mb']} MB vs {ps['peak_rss_mb']} MB",
        "- pipeline stages (s; the export's own time is not in run.json, which it writes): "
        f"{json.dumps(p['stages_s'])}",
        f"- every run (s): read floor {r['runs_s']}, pipeline {p['runs_s']}",
        "",
        "## Scaling",
        "",
        "| AOI | period | scenes | pixel-obs (M) | s | M px-obs/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in scaling:
        lines.append(
            f"| {row['size_km']:g} km | {row['period']} | {row['scenes']} | {row['pixel_obs'] / 1e6:.0f} | "
            f"{row['seconds']} | {row['mpx_obs_per_s']} | {row['peak_rss_mb']} |"
        )
    fit = linear_fit(scaling)
    lines += [
        "",
        f"Least-squares line: {fit['fixed_s']} s + {fit['s_per_mpx_obs']} s per million pixel-observations "
        f"(r2 {fit['r2']}).",
        "",
        f"![time and memory against pixel-observations]({path.with_suffix('.png').name})",
        "",
    ]
    prof = head.get("profile") or {}
    if prof.get("samples"):
        lines += [
            "## Where the time goes",
            "",
            f"py-spy sampled every thread of the 15 km pipeline step at 100 Hz ({prof['samples']} samples of "
            "threads at work; threads waiting on a queue or lock are left out). Numba kernels and GDAL "
            "decoding show as the Python function that called them. Flame graph: "
            "[bench-flame.svg](bench-flame.svg).",
            "",
            "| on top of the stack (self) | share | pipeline function, with all it calls | share |",
            "|---|---|---|---|",
        ]
        for (f, a), (g, b) in zip(prof["self"], prof["inclusive"] + [("", 0.0)] * 12):
            lines.append(f"| `{f}` | {a:.1%} | {'`' + g + '`' if g else ''} | {f'{b:.1%}' if g else ''} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    import platform
    from datetime import datetime

    # every step imports this package: from its compiled bytecode, as an installed copy does, even where
    # PYTHONDONTWRITEBYTECODE keeps Python from caching it (each run compiled the package, 0.1-0.2 s)
    compileall.compile_dir(REPO / "pipeline", quiet=1)
    sim = bench_aoi()
    full = sub_aoi(sim, 15.0)
    start, end = PERIODS["2 years"]
    print("bench AOI ready:", sim.catalog, flush=True)
    head = {"machine": platform.machine(), "when": datetime.now().strftime("%Y-%m-%d %H:%M")}
    head.update(
        best_of(
            REPEATS,
            {
                "read": ("read", full, sim.catalog, start, end),
                "pipeline": ("pipeline", full, sim.catalog, start, end),
                "pipeline_no_evidence": ("pipeline_no_evidence", full, sim.catalog, start, end),
            },
        )
    )
    print("read floor", head["read"], "\npipeline", head["pipeline"], flush=True)
    print("pipeline without evidence", head["pipeline_no_evidence"], flush=True)
    head["baseline_km"] = baseline_km(head["read"]["scenes"])
    small = sub_aoi(sim, head["baseline_km"])
    head.update(
        best_of(
            2,
            {
                "baseline": ("baseline", small, sim.catalog, start, end),
                "pipeline_small": ("pipeline", small, sim.catalog, start, end),
            },
        )
    )
    print("baseline", head["baseline"], "\npipeline (baseline size)", head["pipeline_small"], flush=True)
    scaling = []
    for size in SIZES_KM:
        for label, (s, e) in PERIODS.items():
            one = best_of(REPEATS, {"run": ("pipeline", sub_aoi(sim, size), sim.catalog, s, e)})["run"]
            row = {"size_km": size, "period": label, **one}
            scaling.append(row)
            print("scaling", size, label, row["seconds"], "s", row["peak_rss_mb"], "MB", flush=True)
    out = REPO / "reports" / "bench.md"
    out.parent.mkdir(exist_ok=True)
    head["profile"] = profile_pipeline(full, sim.catalog, start, end, out.with_name("bench-flame.svg"))
    write_report(out, head, scaling)
    (out.with_suffix(".json")).write_text(
        json.dumps({"head": head, "scaling": scaling, "fit": linear_fit(scaling)}, indent=1)
    )
    print(out.read_text())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        kind, *args = json.loads(sys.argv[2])
        print(json.dumps(WORK[kind](*args)))
    else:
        main()
