"""What the command line shows and keeps: logging to the console and to the run's log file, and the
progress bars of the compute stages and of downloads."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

state = {"verbose": False, "level": logging.INFO}


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool, quiet: bool) -> None:
    state["verbose"] = verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    state["level"] = level
    # the root logger lets INFO through for the run's log file; the console shows what was asked for
    logging.basicConfig(level=min(level, logging.INFO), format=LOG_FORMAT, datefmt="%H:%M:%S")
    for h in logging.getLogger().handlers:
        if type(h) is logging.StreamHandler:
            h.setLevel(level)
    for noisy in ("rasterio", "odc", "urllib3", "distributed", "fiona", "pyogrio", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@contextmanager
def log_above_bars():
    """tqdm's ``logging_redirect_tqdm`` (log lines print above the progress bars), keeping the console's
    level, which tqdm's handler does not copy: without this, --quiet printed every INFO line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        for h in logging.getLogger().handlers:
            if type(h).__name__ == "_TqdmLoggingHandler":
                h.setLevel(state["level"])
        yield


def progress_bars(quiet: bool):
    """Progress bars for the run (tqdm, on stderr; off with --quiet and when stderr is not a terminal)."""
    if quiet:
        return None
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, file=sys.stderr, disable=None, dynamic_ncols=True, leave=False)


@contextmanager
def run_log(out: Path):
    """Log the run (INFO and up, whatever the console shows) to ``out/run.log``. The run dir appears
    only when complete, so the log is written beside it and moved in at the end; a failed run leaves
    it as ``<out>.failed.log`` next to where the run dir would be."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.log-{os.getpid()}"
    handler = logging.FileHandler(tmp, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    logging.getLogger("pipeline").info("command: %s", " ".join(sys.argv))
    ok = False
    try:
        yield
        ok = True
    except BaseException as e:
        logging.getLogger("pipeline").error("failed: %s", e)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        if ok and out.is_dir():
            os.replace(tmp, out / "run.log")
        else:
            failed = out.parent / f"{out.name}.failed.log"
            os.replace(tmp, failed)
            typer.echo(f"log of the failed run: {failed}", err=True)


@contextmanager
def monthly_log(out: Path):
    """Scheduled runs log to ``<out>.monthly.log`` (appended): a run that finds nothing new must not
    touch the run dir, not even its run.log."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out.parent / f"{out.name}.monthly.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    logging.getLogger("pipeline").info("command: %s", " ".join(sys.argv))
    try:
        yield
    except BaseException as e:
        if not isinstance(e, SystemExit):  # into the file only: main() prints the one line on the console
            handler.handle(
                logging.makeLogRecord(
                    {
                        "name": "pipeline",
                        "levelno": logging.ERROR,
                        "levelname": "ERROR",
                        "msg": "failed: %s",
                        "args": (e,),
                    }
                )
            )
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


class FetchBars:
    """Scenes and bytes of the scene cache's downloads, on stderr (created here, passed in)."""

    def __init__(self):
        from tqdm import tqdm

        self.scenes = tqdm(desc="scenes", unit="scene", total=0, position=0, leave=False)
        self.bytes = tqdm(desc="download", unit="B", unit_scale=True, unit_divisor=1024, position=1, leave=False)

    def set_scenes(self, total: int) -> None:
        self.scenes.reset(total=total)

    def scene_done(self) -> None:
        self.scenes.update(1)

    def add_bytes(self, n: int) -> None:
        self.bytes.update(n)

    def close(self) -> None:
        self.scenes.close()
        self.bytes.close()


class fetch_progress:  # noqa: N801 - used as a context manager, like a function
    def __init__(self, quiet: bool):
        self.p = None if quiet or not sys.stderr.isatty() else FetchBars()

    def __enter__(self):
        return self.p

    def __exit__(self, *exc):
        if self.p is not None:
            self.p.close()


def print_plan(plan: dict, verbose: bool) -> None:
    from collections import Counter

    mb = 1e6
    typer.echo(
        f"dry run: {plan['aoi']}, {plan['area_km2']} km2, grid {plan['grid']} ({plan['crs']}), "
        f"{plan['period'][0]} to {plan['period'][1]}, source {plan['source']}"
    )
    found = Counter(s["datetime"][:4] for s in plan["scenes"])
    typer.echo(f"{'year':>6} {'scenes':>7}")
    for y in sorted(found):
        typer.echo(f"{y:>6} {found[y]:>7}")
    typer.echo(
        f"scenes found: {len(plan['scenes'])}; set aside: {len(plan['skipped'])} "
        f"(e.g. over the cloud limit); DEM tiles: {len(plan['dem_items'])}"
    )
    typer.echo(
        f"to fetch: {len(plan['bands'])} bands ({', '.join(plan['bands'])}) x {len(plan['scenes'])} scenes x "
        f"{plan['bytes_per_scene'] / mb:.1f} MB = {plan['bytes_total'] / mb:,.0f} MB of pixels "
        "(the AOI window, uncompressed)"
    )
    typer.echo(f"would write: {plan['out']}")
    typer.echo("scenes:")
    for sc in plan["scenes"]:
        cc = sc["cloud_cover"]
        typer.echo(f"  {sc['datetime'][:10]}  {sc['id']}  cloud {cc if cc is not None else '?'}%")
    if verbose:
        for sk in plan["skipped"]:
            typer.echo(f"  set aside {sk.get('id')}: {sk.get('reason')}")
