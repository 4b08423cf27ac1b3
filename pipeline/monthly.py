"""Monthly runs: what a scheduler calls once a month (``python -m pipeline monthly`` / ``make monthly``).

A monthly run is an ordinary run whose period ends today, made cheap by what the previous runs left:

1. **Lock.** ``<out>.lock`` (fcntl, held for the whole run): a second run started while one is still
   going exits at once with ``EXIT_LOCKED`` and touches nothing. The kernel drops the lock when the
   process dies, so a killed run never leaves a stale lock behind.
2. **Look for new scenes.** The source is searched from a little before the end of the last
   successful run (``lookback_days``: archives ingest scenes days late) to today. Scenes it finds
   that the last successful run neither used nor set aside for good are *new*. None, with the same
   settings, the same year and the outputs in place: nothing to do, exit ``EXIT_NOTHING_NEW``, the
   outputs are not touched.
3. **Run.** Otherwise an ordinary ``run`` over the configured start to today: the scene cache fetches
   only the entries it lacks (the new scenes: ``fetch.scenes_new`` in ``run.json``), the yearly
   composites persisted in ``compute.composite_dir`` (``<out>.composites`` unless configured) are
   reused for every year whose scenes are unchanged, so only the years the new scenes touch are
   counted again; the run dir is replaced atomically; the current year is ``provisional``.
4. **Record.** ``<out>.state.json`` (what the next run compares against) is written only after a
   successful run; every run, whatever its outcome, appends a row to ``runs.csv`` beside the outputs.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from pipeline import export
from pipeline.config import RunConfig
from pipeline.errors import NoScenesError, PipelineError

log = logging.getLogger(__name__)

EXIT_UPDATED = 0  # new scenes: outputs replaced
EXIT_NOTHING_NEW = 10  # no new scene since the last successful run: outputs untouched
EXIT_LOCKED = 75  # another run of this AOI holds the lock (EX_TEMPFAIL: try again later)
# failures keep the pipeline's own codes: 1 (source, output), 2 (config, AOI), 3 (no scenes)

LOOKBACK_DAYS = 30
RUNS_CSV_FIELDS = [
    "started",
    "aoi",
    "status",
    "exit_code",
    "scenes_new",
    "sites_new",
    "sites_total",
    "duration_s",
    "out",
    "changes",
    "message",
]


class MonthlyLocked(PipelineError):
    """Another monthly run of the same AOI is in progress."""

    exit_code = EXIT_LOCKED


@dataclass
class MonthlyPaths:
    out: Path

    @property
    def state(self) -> Path:
        return self.out.parent / f"{self.out.name}.state.json"

    @property
    def lock(self) -> Path:
        return self.out.parent / f"{self.out.name}.lock"

    @property
    def runs_csv(self) -> Path:
        return self.out.parent / "runs.csv"

    @property
    def composites(self) -> Path:
        return self.out.parent / f"{self.out.name}.composites"


@dataclass
class MonthlyResult:
    status: str  # "updated" | "nothing new"
    exit_code: int
    scenes_new: list[str] = field(default_factory=list)
    sites_new: int = 0
    sites_total: int | None = None
    duration_s: float = 0.0
    out: Path | None = None
    manifest: dict | None = None


class Lock:
    """An exclusive, non-blocking fcntl lock on ``path``; the file holds the holder's pid and start."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MonthlyLocked(
                f"another monthly run of this AOI is in progress ({holder}; lock {self.path}): "
                "this one exits without touching anything; the scheduler's next call will run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_now()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def fingerprint(cfg: RunConfig) -> str:
    """What the outputs depend on besides the scenes: every setting except the period's end (which a
    monthly run moves to today), where things are written, and how they are fetched."""
    doc = cfg.model_dump(
        mode="json",
        exclude={
            "out": True,
            "period": {"end"},
            "cache": True,
            "download": True,
            "compute": {"workers", "scheduler", "composite_dir"},
        },
    )
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("monthly state %s unreadable (%s): doing a full run", path, e)
        return None


def monthly_config(cfg: RunConfig, today: date, paths: MonthlyPaths) -> RunConfig:
    """The run config of a monthly run: period to today, persistent yearly composites."""
    cfg = cfg.model_copy(deep=True)
    if cfg.period.end < today:
        cfg.period = cfg.period.model_copy(update={"end": today})
    if cfg.compute.composite_dir is None:
        cfg.compute = cfg.compute.model_copy(update={"composite_dir": paths.composites})
    return cfg


def known_scenes(manifest: dict) -> set[str]:
    """Scenes the next run need not count as new: used, or set aside for a lasting reason (cloud,
    superseded, unreadable). A scene whose download failed is not known: it is tried again."""
    known = set(manifest.get("scenes_used", []))
    known |= {
        s["id"] for s in manifest.get("scenes_skipped", []) if not str(s.get("reason", "")).startswith("fetch failed")
    }
    return known


def new_scenes(cfg: RunConfig, aoi, state: dict, since: date, today: date) -> list[str]:
    """Ids of scenes in [since, today] that the last successful run did not know."""
    from pipeline.sources import make_source

    src = make_source(cfg.source, cfg.download)
    try:
        found = src.search(aoi.geometry, since, today, cfg.source.max_cloud_cover)
    except NoScenesError:
        return []
    known = set(state.get("scenes_known", []))
    return sorted(it.id for it in found.scenes if it.id not in known)


def monthly(
    cfg: RunConfig,
    today: date | None = None,
    lookback_days: int = LOOKBACK_DAYS,
    progress=None,
    fetch_progress=None,
    notify: str | None = None,
) -> MonthlyResult:
    """One scheduled run; see the module docstring. Raises MonthlyLocked or PipelineError; every
    outcome (including those) is appended to runs.csv. ``notify``: a command run with the path of the
    run's changes.csv when something changed (see ``notify_changes``)."""
    from pipeline.aoi import load_aoi

    today = today or date.today()
    paths = MonthlyPaths(Path(cfg.out).resolve())
    t0 = time.perf_counter()
    row = {"started": _now(), "aoi": cfg.name or Path(cfg.aoi).stem, "out": paths.out}
    try:
        with Lock(paths.lock):
            result = _monthly_locked(cfg, today, lookback_days, paths, progress, fetch_progress, load_aoi)
    except BaseException as e:
        if isinstance(e, PipelineError):
            status, code, message = ("locked" if isinstance(e, MonthlyLocked) else "failed"), e.exit_code, str(e)
        else:
            status, code = "failed", 130 if isinstance(e, KeyboardInterrupt) else 1
            message = f"{type(e).__name__}: {e}"
        _append_row(
            paths.runs_csv,
            {**row, "status": status, "exit_code": code, "duration_s": time.perf_counter() - t0, "message": message},
        )
        raise
    result.duration_s = round(time.perf_counter() - t0, 2)
    changes = paths.out / "changes.csv" if result.exit_code == EXIT_UPDATED else None
    if notify and changes is not None and result.manifest and result.manifest.get("changes"):
        notify_changes(notify, changes)
    _append_row(
        paths.runs_csv,
        {
            **row,
            "status": result.status,
            "exit_code": result.exit_code,
            "scenes_new": len(result.scenes_new),
            "sites_new": result.sites_new,
            "sites_total": result.sites_total,
            "duration_s": result.duration_s,
            "changes": changes or "",
        },
    )
    return result


NOTIFY_TIMEOUT_S = 300


def notify_changes(command: str, changes: Path) -> bool:
    """Run ``command`` (split like a shell would, no shell) with the changes file's path as its last
    argument, e.g. a mail or chat hook. A hook that fails is logged; it never fails the run."""
    argv = [*shlex.split(command), str(changes)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=NOTIFY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("notify hook %r failed (%s); the run itself succeeded", command, e)
        return False
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        log.warning("notify hook %r exited %d (%s); the run itself succeeded", command, done.returncode, tail[0])
        return False
    log.info("notify hook %r ran with %s", command, changes)
    return True


def _monthly_locked(cfg, today, lookback_days, paths, progress, fetch_progress, load_aoi) -> MonthlyResult:
    from pipeline.run import run

    cfg = monthly_config(cfg, today, paths)
    state = read_state(paths.state)
    fp = fingerprint(cfg)
    aoi = load_aoi(cfg.aoi, cfg.resolution)
    previous = paths.out / "run.json"
    if state and previous.is_file() and state.get("fingerprint") == fp and state.get("year") == today.year:
        since = max(cfg.period.start, date.fromisoformat(state["searched_to"]) - timedelta(days=lookback_days))
        fresh = new_scenes(cfg, aoi, state, since, today)
        log.info("monthly: %d new scenes in %s..%s", len(fresh), since, today)
        if not fresh:
            state.update(checked=_now(), searched_to=max(state["searched_to"], today.isoformat()))
            export.write_json(paths.state, state)
            return MonthlyResult("nothing new", EXIT_NOTHING_NEW, sites_total=state.get("sites_total"), out=paths.out)
    elif state is None or not previous.is_file():
        log.info("monthly: no previous run at %s: a full run", paths.out)
    else:
        log.info("monthly: settings or year changed since the last run: running again")
    result = run(cfg, today=today, progress=progress, fetch_progress=fetch_progress)
    m = result.manifest
    n_new = int(m.get("changes", {}).get("new", 0))
    fetched = (m.get("fetch") or {}).get("new")
    if fetched is not None:  # online: what the cache downloaded now (the DEM is not a scene)
        scenes_new = sorted(set(fetched) - set(m.get("dem_items", [])))
    else:  # local catalog: what the last run did not know
        scenes_new = sorted(set(m["scenes_used"]) - set(state.get("scenes_known", []) if state else []))
    export.write_json(
        paths.state,
        {
            "aoi": m["aoi"],
            "last_success": _now(),
            "checked": _now(),
            "searched_to": today.isoformat(),
            "year": today.year,
            "fingerprint": fp,
            "scenes_known": sorted(known_scenes(m)),
            "sites_total": m["counts"]["sites"],
            "out": str(paths.out),
        },
    )
    return MonthlyResult("updated", EXIT_UPDATED, scenes_new, n_new, m["counts"]["sites"], out=result.out, manifest=m)


def _append_row(path: Path, row: dict) -> None:
    """One line, written with a single O_APPEND write so rows of concurrent AOIs never interleave. A
    runs.csv of an older version, with fewer columns, is first rewritten with today's header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != RUNS_CSV_FIELDS:
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(tmp, "w", newline="") as f:
                upgrade = csv.DictWriter(f, RUNS_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
                upgrade.writeheader()
                upgrade.writerows(old)
            os.replace(tmp, path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if not path.is_file() or path.stat().st_size == 0:
        w.writerow(RUNS_CSV_FIELDS)
    values = {**row, "duration_s": f"{float(row.get('duration_s', 0)):.2f}"}
    values["message"] = str(row.get("message", "")).replace("\n", " ")[:500]
    w.writerow(["" if values.get(k) is None else str(values.get(k, "")) for k in RUNS_CSV_FIELDS])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, buf.getvalue().encode())
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
