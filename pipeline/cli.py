"""Command line: thin wrappers that build a config and call the pipeline (run, monthly, export, report...).

Only this module configures logging and prints; errors the pipeline expects (PipelineError) become
one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

# No linear algebra here: OpenBLAS (numpy's and scipy's each) would start a thread per core that spins
# for a tenth of a second beside the run's own, as dask.distributed also sets for its workers
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer  # noqa: E402

from pipeline import console, run_commands  # noqa: E402
from pipeline.errors import ConfigError, PipelineError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# simulate.SCENARIOS, spelled out so that --help does not import the simulator (tests check they agree)
SCENARIO_HELP = (
    "harder variant: single_pixel_ponds, wet, haze, villages, regrowth, pre_period, two_orbits, "
    "dense, swidden_heavy, landslide_heavy, steep, flat, valley, misregistered or all"
)
ALL_HELP = (
    "every configured AOI (--config-dir's *.yaml, the demo's aside), one after another; exit code: how many failed"
)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Kachin rare-earth mining watch: Sentinel-2 change detection of leaching ponds and cleared slopes.",
)
log = logging.getLogger("pipeline")


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r} is not KEY=VALUE: write e.g. --set ponds.mndwi_min=0.1")
        k, v = p.split("=", 1)
        import yaml

        from pipeline.config import yaml_value

        try:
            out[k.strip()] = yaml_value(v)
        except yaml.YAMLError as e:
            raise ConfigError(
                f"--set {p!r}: the value is not valid YAML ({str(e).splitlines()[0]}): "
                "quote it, e.g. --set 'name=\"x: y\"'"
            ) from None
    return out


def _run_all(config: Path | None, config_dir: Path, overrides: dict, run_one, verbose: bool) -> None:
    """``--all``: ``run_one`` on every AOI of ``config_dir`` (exit code: how many failed), or with
    ``run_one`` None (``--dry-run``), each AOI's plan."""
    from pipeline import belts
    from pipeline.config import load_config
    from pipeline.run import plan

    if config is not None:
        raise ConfigError("--all runs every AOI config of --config-dir: drop --config (or --all)")
    if run_one is None:
        for path in belts.belt_configs(config_dir):
            console.print_plan(plan(load_config(path, overrides)), verbose)
        return
    raise SystemExit(belts.run_all(config_dir, overrides, run_one))


def _monthly_one(day, lookback_days: int, notify, postgis_dsn, strict: bool, quiet: bool, cfg):
    """One AOI's monthly run, then its PostGIS export (also when nothing is new: a retry of a failed
    one). ``strict`` (``--all``): a run that did not finish (a held lock) raises, to count as failed."""
    from pipeline.monthly import EXIT_NOTHING_NEW
    from pipeline.monthly import monthly as monthly_run

    with console.monthly_log(cfg.out), console.log_above_bars(), console.fetch_progress(quiet) as fetch_progress:
        done = monthly_run(cfg, day, lookback_days, console.progress_bars(quiet), fetch_progress, notify=notify)
    if strict and done.exit_code not in (0, EXIT_NOTHING_NEW):
        raise PipelineError(f"the monthly run ended with exit code {done.exit_code} (75: another run holds the lock)")
    if postgis_dsn and done.exit_code in (0, EXIT_NOTHING_NEW):
        from pipeline.postgis import export_run

        export_run(cfg.out, postgis_dsn)
    return done


def _print_table(table) -> None:
    typer.echo(table.to_string(index=False))


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (configs/*.yaml)"),
    aoi: Optional[Path] = typer.Option(None, help="AOI GeoJSON polygon (lon/lat)"),
    source: Optional[str] = typer.Option(None, help="scene source: local, earth-search, planetary-computer"),
    catalog: Optional[Path] = typer.Option(None, help="local STAC catalog.json (contract 3)"),
    stac_url: Optional[str] = typer.Option(None, help="STAC API root (default: the source's public endpoint)"),
    cache_dir: Optional[Path] = typer.Option(None, help="scene cache (default ~/.cache/kachin-ree-watch)"),
    offline: Optional[bool] = typer.Option(None, "--offline", help="use the scene cache only: no search, no download"),
    start: Optional[str] = typer.Option(None, help="first day, YYYY-MM-DD"),
    end: Optional[str] = typer.Option(None, help="last day, YYYY-MM-DD"),
    out: Optional[Path] = typer.Option(None, help="run directory to write"),
    workers: Optional[int] = typer.Option(None, help="dask threads (default: all cores)"),
    scheduler: Optional[str] = typer.Option(None, help="dask.distributed scheduler, e.g. tcp://10.0.0.5:8786"),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="override any setting, e.g. --set ponds.mndwi_min=0.1 (every threshold: python -m pipeline settings)",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="search only: list the scenes found and the data volume to fetch; read no pixels, write nothing",
    ),
    all_: bool = typer.Option(False, "--all", help=ALL_HELP),
    config_dir: Path = typer.Option(REPO / "configs", help="with --all: the AOIs' configs"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging (and tracebacks on errors)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only, no progress bars"),
):
    """Detect ponds, clearings and sites for one AOI (or every configured one) and period; write a run directory.

    The run dir holds footprints.gpkg, yearly_summary.csv, rasters, report.html, run.json and run.log.
    The thresholds and every other setting, with defaults, bounds and reasons: python -m pipeline settings.

    Examples:\n
      python -m pipeline run --config configs/chipwe_pangwa.yaml\n
      python -m pipeline run --config configs/chipwe_pangwa.yaml --dry-run      # what would be read\n
      python -m pipeline run --all --start 2024-01-01       # every belt; then outputs/summary/index.html\n
      python -m pipeline run --config configs/chipwe_pangwa.yaml --start 2023-01-01 --set ponds.mndwi_min=0.05\n
      python -m pipeline run --aoi x.geojson --source local --catalog c/catalog.json --start 2018-01-01 --end 2024-12-31
    """
    from pipeline.config import load_config
    from pipeline.run import plan
    from pipeline.run import run as run_pipeline

    console.setup_logging(verbose, quiet)
    overrides = {
        "aoi": aoi,
        "source.kind": source,
        "source.catalog": catalog,
        "source.stac_url": stac_url,
        "cache.dir": cache_dir,
        "cache.offline": offline,
        "period.start": start,
        "period.end": end,
        "out": out,
        "compute.workers": workers,
        "compute.scheduler": scheduler,
        **_overrides(set_),
    }

    def run_one(cfg):
        with console.run_log(cfg.out), console.log_above_bars(), console.fetch_progress(quiet) as fetch_progress:
            return run_pipeline(cfg, progress=console.progress_bars(quiet), fetch_progress=fetch_progress)

    if all_:
        return _run_all(config, config_dir, overrides, run_one if not dry_run else None, verbose)
    cfg = load_config(config, overrides)
    if dry_run:
        console.print_plan(plan(cfg), verbose)
        return
    result = run_one(cfg)
    if not quiet:
        _print_table(result.summary)
        typer.echo(f"wrote {result.out} (open {result.out}/report.html in a browser)")


@app.command("settings")
def settings_cmd(markdown: bool = typer.Option(False, "--markdown", help="a Markdown table, as in docs/methods.md")):
    """List every setting with its default, bounds and reason; set them in a YAML config or with --set.

    Examples:\n
      python -m pipeline settings\n
      python -m pipeline settings --markdown     # the table in docs/methods.md
    """
    from pipeline.config import settings

    if markdown:
        typer.echo("| setting | default | bounds | what and why |\n|---|---|---|---|")
    for name, default, bounds, description in settings():
        if markdown:
            cells = (f"`{name}`", f"`{default}`", bounds, description)
            typer.echo("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        else:
            typer.echo(f"{name} = {default}" + (f"  ({bounds})" if bounds else "") + f"\n    {description}")


@app.command()
def fetch(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (configs/*.yaml)"),
    aoi: Optional[Path] = typer.Option(None, help="AOI GeoJSON polygon (lon/lat)"),
    source: Optional[str] = typer.Option(None, help="earth-search or planetary-computer"),
    stac_url: Optional[str] = typer.Option(None, help="STAC API root (default: the source's public endpoint)"),
    cache_dir: Optional[Path] = typer.Option(None, help="scene cache (default ~/.cache/kachin-ree-watch)"),
    start: Optional[str] = typer.Option(None, help="first day, YYYY-MM-DD"),
    end: Optional[str] = typer.Option(None, help="last day, YYYY-MM-DD"),
    verify: bool = typer.Option(False, "--verify", help="re-hash every cached entry against its checksum"),
    set_: list[str] = typer.Option([], "--set", help="override any setting"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Pre-fetch the scenes of an AOI and period into the scene cache (clipped to the AOI grid).

    Only what the cache lacks is downloaded; corrupt or partial entries are fetched again. Prints
    the cache's report as JSON. Example:

      python -m pipeline fetch --config configs/chipwe_pangwa.yaml --start 2024-01-01
    """
    from pipeline.aoi import load_aoi
    from pipeline.config import load_config
    from pipeline.count import BANDS
    from pipeline.sources import find_scenes
    from pipeline.sources.loading import SCL

    console.setup_logging(verbose, quiet)
    overrides = {
        "aoi": aoi,
        "source.kind": source,
        "source.stac_url": stac_url,
        "cache.dir": cache_dir,
        "cache.verify": "checksum" if verify else None,
        "period.start": start,
        "period.end": end,
        **_overrides(set_),
    }
    cfg = load_config(config, overrides)
    if cfg.source.kind == "local":
        raise ConfigError("fetch needs an online source: pass --source earth-search (or planetary-computer)")
    with console.fetch_progress(quiet) as progress:
        found = find_scenes(cfg, load_aoi(cfg.aoi, cfg.resolution), [*BANDS, SCL], progress)
    typer.echo(json.dumps(found.fetch, indent=1))


@app.command()
def simulate(
    out: Path = typer.Option(..., help="directory to write catalog.json, truth.gpkg and aoi.geojson into"),
    seed: int = typer.Option(0, help="random seed; 0 is the demo's window of the Pang War pond field"),
    size_km: float = typer.Option(6.0, help="AOI edge in km"),
    start_year: int = typer.Option(2020),
    end_year: int = typer.Option(2024),
    revisit_days: int = typer.Option(10, help="days between scenes"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    scenario: str = typer.Option("standard", help=SCENARIO_HELP),
):
    """Write a simulated AOI: a Sentinel-2-like local STAC catalog with known ground truth.

    Example: python -m pipeline simulate --out outputs/sim --seed 3
    """
    from pipeline.lab.simulate import simulate as simulate_aoi

    console.setup_logging(verbose, quiet)
    sim = simulate_aoi(
        out,
        seed,
        size_km=size_km,
        start_year=start_year,
        end_year=end_year,
        revisit_days=revisit_days,
        scenario=scenario,
    )
    if not quiet:
        typer.echo(f"wrote {sim.catalog}, {sim.truth}, {sim.aoi}")


@app.command()
def evaluate(
    run_dir: Path = typer.Option(..., "--run", help="a run directory"),
    truth: Path = typer.Option(..., help="truth.gpkg (contract 5)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Score a run against ground truth; prints JSON.

    Example: python -m pipeline evaluate --run outputs/demo --truth outputs/demo-scenes/truth.gpkg
    """
    from pipeline.lab.evaluate import evaluate as evaluate_run

    console.setup_logging(verbose, True)
    typer.echo(json.dumps(evaluate_run(run_dir, truth), indent=1))


# the commands on a finished run dir
app.command("export")(run_commands.export_cmd)
app.command("report")(run_commands.report_cmd)
app.command("review")(run_commands.review_cmd)
app.command("reference")(run_commands.reference_cmd)
app.command("verify")(run_commands.verify_cmd)


def demo_config_path() -> Path | None:
    p = REPO / "configs" / "demo.yaml"
    return p if p.is_file() else None


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), help="run directory"),
    scenes: Path = typer.Option(Path("outputs/demo-scenes"), help="where the simulated catalog goes"),
    seed: int = typer.Option(0),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Simulate the demo AOI (a 6 km window of the Pang War belt, 2020-2024), run, and score it.

    The scenes are SIMULATED: no credentials or network needed. The simulation (about 30 s) is reused
    when its parameters have not changed.

    Examples:\n
      python -m pipeline demo                      # -> outputs/demo/report.html\n
      python -m pipeline demo --seed 100 --out outputs/seed100 --scenes outputs/seed100-scenes
    """
    from pipeline.config import load_config
    from pipeline.lab.evaluate import evaluate as evaluate_run
    from pipeline.lab.evaluate import format_scores
    from pipeline.lab.simulate import simulate as simulate_aoi
    from pipeline.run import run as run_pipeline

    console.setup_logging(verbose, quiet)
    sim = simulate_aoi(scenes, seed, reuse=True)
    cfg = load_config(
        demo_config_path(),
        sim.run_settings(out),
    )
    with console.run_log(cfg.out), console.log_above_bars():
        result = run_pipeline(cfg, progress=console.progress_bars(quiet))
    scores = evaluate_run(result.out, sim.truth)
    (result.out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    _print_table(result.summary)
    typer.echo("")
    typer.echo(format_scores(scores))
    typer.echo(f"\nwrote {result.out} (simulated scenes in {scenes})")


@app.command("train")
def train_cmd(
    labels: list[Path] = typer.Option(
        ...,
        help="labelled polygons (contract 5: layers ponds, clearings), or a site register (<out>.register.gpkg: "
        "its confirmed and rejected sites); repeat once per catalog",
    ),
    catalog: list[Path] = typer.Option(..., help="local catalog.json the labels belong to; repeat, same order"),
    aoi: Optional[list[Path]] = typer.Option(None, help="AOI of each catalog (default: aoi.geojson beside it)"),
    start: str = typer.Option("2020-01-01"),
    end: str = typer.Option("2024-12-31"),
    out: Path = typer.Option(Path("models/pixel-hgb.joblib"), help="where to save the model"),
    config: Optional[Path] = typer.Option(None, help="settings the detection runs with (default configs/demo.yaml)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Train the pixel classifier (scikit-learn HistGradientBoosting) on labelled polygons; use it with
    `classifier: model` and `model_path:` in a config.

    Example: python -m pipeline train --labels sim0/truth.gpkg --catalog sim0/catalog.json --out models/m.joblib
    """
    from pipeline.config import load_config
    from pipeline.run import train_from_catalogs

    console.setup_logging(verbose, False)
    if len(labels) != len(catalog) or (aoi and len(aoi) != len(catalog)):
        raise ConfigError("give one --labels (and --aoi, if any) per --catalog, in the same order")
    aois = aoi or [c.parent / "aoi.geojson" for c in catalog]
    cfgs = [
        load_config(
            config or demo_config_path(),
            {
                "aoi": a,
                "source.kind": "local",
                "source.catalog": c,
                "period.start": start,
                "period.end": end,
                "out": out.parent / ".train-run",
                "compute.composite_dir": c.parent / ".composites",
            },
        )
        for a, c in zip(aois, catalog)
    ]
    bundle = train_from_catalogs(cfgs, labels, out)
    typer.echo(
        f"wrote {out}: {bundle['n_pixels']} training pixels, {len(bundle['features'])} features, "
        f"training data sha256 {bundle['training_data_sha256'][:16]}..."
    )


@app.command("aois")
def list_aois():
    """List the configured AOIs (aois/*.geojson) with their areas, analysis grids and how approximate
    their outlines are (each file's ``source`` and ``note`` say more).

    Example: python -m pipeline aois     # then: make run AOI=<name>
    """
    from pipeline.aoi import load_aoi

    for f in sorted((REPO / "aois").glob("*.geojson")):
        a = load_aoi(f)
        outline = "approximate" if a.properties.get("approximate", True) else "mapped"
        typer.echo(
            f"{f.stem:16s} {a.area_km2:8.1f} km2  {a.crs.to_string()}  grid {a.grid.shape.x}x{a.grid.shape.y} px"
            f"  {outline}"
        )


@app.command()
def monthly(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (configs/*.yaml)"),
    aoi: Optional[Path] = typer.Option(None, help="AOI GeoJSON polygon (lon/lat)"),
    source: Optional[str] = typer.Option(
        None, help="scene source: local, earth-search, planetary-computer, sentinelhub"
    ),
    catalog: Optional[Path] = typer.Option(None, help="local STAC catalog.json (contract 3)"),
    stac_url: Optional[str] = typer.Option(None, help="STAC API root (default: the source's public endpoint)"),
    cache_dir: Optional[Path] = typer.Option(None, help="scene cache (default ~/.cache/kachin-ree-watch)"),
    start: Optional[str] = typer.Option(None, help="first day, YYYY-MM-DD (the period ends today)"),
    out: Optional[Path] = typer.Option(None, help="run directory to keep up to date"),
    lookback_days: int = typer.Option(30, help="search this many days before the last run's end too (late ingestion)"),
    today: Optional[str] = typer.Option(None, hidden=True, help="pretend today is YYYY-MM-DD (tests, backfills)"),
    notify: Optional[str] = typer.Option(
        None, "--notify", help="command run with the path of changes.csv when something changed (mail, chat)"
    ),
    set_: list[str] = typer.Option([], "--set", help="override any setting, e.g. --set compute.workers=2"),
    all_: bool = typer.Option(False, "--all", help=ALL_HELP),
    config_dir: Path = typer.Option(REPO / "configs", help="with --all: the AOIs' configs"),
    postgis_dsn: Optional[str] = typer.Option(
        None, "--postgis", help="then upsert the outputs into this PostGIS database (export --to postgis)"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging (and tracebacks on errors)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="warnings and errors only, no progress bars"),
):
    """Scheduled run: fetch the scenes since the last successful run, update the outputs.

    Exit codes: 0 new scenes, outputs replaced; 10 nothing new, outputs untouched; 75 another run of
    this AOI holds the lock; 1/2/3 failure (source or output / config / no scenes). Each run appends a
    row to runs.csv beside the run dir; the state is kept in <out>.state.json.

    Examples:\n
      python -m pipeline monthly --config configs/chipwe_pangwa.yaml\n
      make monthly AOI=chipwe_pangwa
    """
    from datetime import date

    from pipeline.config import load_config

    console.setup_logging(verbose, quiet)
    overrides = {
        "aoi": aoi,
        "source.kind": source,
        "source.catalog": catalog,
        "source.stac_url": stac_url,
        "cache.dir": cache_dir,
        "period.start": start,
        "out": out,
        **_overrides(set_),
    }
    day = date.fromisoformat(today) if today else None
    monthly_one = functools.partial(_monthly_one, day, lookback_days, notify, postgis_dsn, all_, quiet)
    if all_:
        return _run_all(config, config_dir, overrides, monthly_one, verbose)
    if config is None and start is None:
        raise ConfigError(
            "monthly needs --config, or --start with --aoi and --out: the period runs from start to today"
        )
    if config is None:
        overrides["period.end"] = start  # replaced by today; the period must validate first
    cfg = load_config(config, overrides)
    result = monthly_one(cfg)
    if not quiet:
        if result.exit_code == 0:
            typer.echo(
                f"updated {result.out}: {len(result.scenes_new)} new scenes, {result.sites_new} new sites "
                f"({result.sites_total} in all), {result.duration_s:.1f} s"
            )
        else:
            typer.echo(f"nothing new since the last run: {cfg.out} left as it was ({result.duration_s:.1f} s)")
    raise SystemExit(result.exit_code)


def main() -> None:
    try:
        app(standalone_mode=False)
    except PipelineError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted; no output was replaced", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the CLI never shows a bare traceback unless asked
        import click

        # a usage error (an unknown command or option): click's message and exit code; typer raises its
        # own copy of click's exceptions (typer._click), whose public base is TyperException
        if isinstance(e, (click.exceptions.ClickException, typer.TyperException)) and hasattr(e, "show"):
            e.show()
            sys.exit(e.exit_code)
        from pipeline.export import disk_full

        if isinstance(e, OSError) and disk_full(e):
            typer.echo(
                f"error: disk full writing {e.filename or 'a file'} ({e.strerror}): free disk space (or put "
                "--out / compute.composite_dir on a larger disk) and run again; no output was replaced",
                err=True,
            )
            sys.exit(1)
        if console.state["verbose"]:
            traceback.print_exc()
        typer.echo(
            f"error: unexpected {type(e).__name__}: {e} (rerun with --verbose for the traceback, and report it)",
            err=True,
        )
        sys.exit(1)
