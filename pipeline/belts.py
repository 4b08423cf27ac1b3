"""Every configured AOI in one go (``run --all``, ``monthly --all``): each AOI runs from its own config,
with its own lock, cache and outputs, one after another; one that fails is logged and the others go on.
Then ``<outputs>/summary/`` gathers the AOIs' yearly summaries into one table (``yearly_summary_all.csv``,
a row per AOI and year, and a total per year) and an index page linking each AOI's report, with a chart
of sites per belt per year."""

from __future__ import annotations

import html
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import charts, export
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError
from pipeline.summary import COLUMNS

log = logging.getLogger(__name__)

SUMMARY_DIR = "summary"
SUMMARY_ALL = "yearly_summary_all.csv"
INDEX = "index.html"
NOT_A_BELT = ("demo",)  # configs/demo.yaml: the simulated demo, not a place to watch
# the columns that add up across AOIs: counts and areas (a year is provisional or a gap if any AOI's is)
ADDITIVE = [c for c in COLUMNS if c not in ("aoi", "year", "provisional", "gap")]


@dataclass
class Outcome:
    """How one AOI's run ended: ``error`` is the one-line message of a failure, empty on success."""

    name: str
    config: Path
    out: Path | None
    error: str
    seconds: float


def belt_configs(config_dir: Path) -> list[Path]:
    """The run configs of every configured AOI in ``config_dir`` (``*.yaml``, the demo's aside)."""
    found = sorted(p for p in Path(config_dir).glob("*.yaml") if p.stem not in NOT_A_BELT)
    if not found:
        raise ConfigError(f"no AOI configs (*.yaml) in {config_dir}: pass --config-dir with the AOIs' configs")
    return found


def run_each(configs: list[Path], overrides: dict, run_one: Callable[[RunConfig], object]) -> list[Outcome]:
    """``run_one`` on each config in turn (with the command line's ``overrides``); a failure of one,
    whatever it is, is logged and recorded, and the next AOI runs."""
    outcomes = []
    for path in configs:
        t0, cfg = time.monotonic(), None
        try:
            cfg = load_config(path, overrides)
            log.info("AOI %s (%s): starting", cfg.name or path.stem, path)
            run_one(cfg)
            error = ""
        except Exception as e:  # noqa: BLE001 - one AOI's failure, of any kind, must not stop the others
            error = f"{type(e).__name__}: {' '.join(str(e).split())}"
            log.error("AOI %s failed: %s", path.stem, error)
        name = (cfg.name if cfg else None) or path.stem
        outcomes.append(Outcome(name, path, cfg.out if cfg else None, error, round(time.monotonic() - t0, 1)))
    return outcomes


def combined_summary(outcomes: list[Outcome]) -> pd.DataFrame:
    """Every finished AOI's yearly summary, the AOI's name first, then per year the AOIs' total
    (``aoi`` = ``all``) of the columns that add up."""
    tables = []
    for o in outcomes:
        csv = o.out / export.SUMMARY if o.out else None
        if csv is not None and csv.is_file():
            t = pd.read_csv(csv)
            t["aoi"] = o.name
            tables.append(t)
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    rows = pd.concat(tables, ignore_index=True)
    totals = rows.groupby("year", as_index=False).agg(
        {**{c: "sum" for c in ADDITIVE if c in rows}, "provisional": "any", "gap": "any"}
    )
    totals["aoi"] = "all"
    return pd.concat([rows, totals], ignore_index=True)[[c for c in COLUMNS if c in rows]]


def write_summary_dir(out: Path, outcomes: list[Outcome]) -> Path:
    """``out`` (``<outputs>/summary``), staged and moved into place whole: the combined table, the
    sites-per-belt chart and the index page, with their checksums in run.json."""
    table = combined_summary(outcomes)
    with export.staged_run_dir(out) as tmp:
        table.to_csv(tmp / SUMMARY_ALL, index=False)
        svg = charts.draw_belts(table[table["aoi"] != "all"], tmp)
        (tmp / INDEX).write_text(index_page(outcomes, svg, out), encoding="utf-8")
        manifest = {"kind": "summary of every AOI", "aois": [o.__dict__ for o in outcomes]}
        export.write_manifest(tmp / export.MANIFEST, manifest, [tmp / SUMMARY_ALL, tmp / charts.BELTS_PNG, tmp / INDEX])
    return out


def index_page(outcomes: list[Outcome], svg: str, out: Path) -> str:
    """The index: each AOI's state and a link to its report (relative to ``out``), and the chart."""
    rows = []
    for o in outcomes:
        report = o.out / "report.html" if o.out else None
        link = (
            f'<a href="{html.escape(Path(os.path.relpath(report, out)).as_posix())}">report</a>'
            if report is not None and report.is_file()
            else ""
        )
        state = "failed: " + html.escape(o.error) if o.error else "ok"
        rows.append(f"<tr><td>{html.escape(o.name)}</td><td>{state}</td><td>{o.seconds}</td><td>{link}</td></tr>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Every AOI</title>'
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em;"
        "text-align:left}</style></head><body><h1>Rare-earth mining sites, every configured AOI</h1>"
        f'<p>Counts per AOI and year: <a href="{SUMMARY_ALL}">{SUMMARY_ALL}</a>.</p>{svg}'
        "<table><tr><th>AOI</th><th>last run</th><th>seconds</th><th></th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def failures(outcomes: list[Outcome]) -> int:
    """The exit code of an ``--all`` run: how many AOIs failed (0: all finished)."""
    return min(sum(1 for o in outcomes if o.error), 125)


def run_all(config_dir: Path, overrides: dict, run_one: Callable[[RunConfig], object]) -> int:
    """``run --all`` and ``monthly --all``: every AOI of ``config_dir`` in turn, then the summary dir
    beside their outputs (``<outputs>/summary``); returns the exit code, how many AOIs failed."""
    if any(overrides.get(k) is not None for k in ("aoi", "out", "source.catalog", "name")):
        raise ConfigError("--all runs each AOI from its own config: drop --aoi, --out and --catalog")
    outcomes = run_each(belt_configs(config_dir), overrides, run_one)
    outs = [o.out for o in outcomes if o.out is not None]
    if outs:
        parent = Path(os.path.commonpath([p.resolve().parent for p in outs]))
        write_summary_dir(parent / SUMMARY_DIR, outcomes)
        log.info("wrote %s", parent / SUMMARY_DIR / INDEX)
    failed = failures(outcomes)
    for o in outcomes:
        log.log(logging.ERROR if o.error else logging.INFO, "%s: %s", o.name, o.error or f"ok ({o.seconds} s)")
    return failed
