"""Where a run's tasks go (threads here, or a dask.distributed cluster) and how they show progress."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import dask
import dask.threaded

from pipeline.errors import PipelineError
from pipeline.extras import require

log = logging.getLogger(__name__)


SCHEDULER_TIMEOUT_S = 15  # how long to wait for a dask.distributed scheduler to answer


# A progress factory, tqdm-like: ``progress(total=n, desc=..., unit=...)`` returns an object with
# ``update(n)`` and ``close()``. The CLI creates it (tqdm); library code only ticks it.
Progress = Callable[..., Any]


@contextmanager
def dask_progress(progress: Progress | None, desc: str):
    """Tick ``progress`` once per dask task finished by the local (threaded) scheduler."""
    if progress is None:
        yield
        return
    from dask.callbacks import Callback

    bar = progress(total=0, desc=desc, unit="task")

    class Ticks(Callback):
        def _start_state(self, dsk, state):
            bar.total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished") if k in state)
            if hasattr(bar, "refresh"):
                bar.refresh()

        def _posttask(self, key, result, dsk, state, worker_id):
            bar.update(1)

    try:
        with Ticks():
            yield
    finally:
        bar.close()


@contextmanager
def dask_scheduler(compute):
    """Threads on this machine, or the dask.distributed cluster at ``compute.scheduler`` (or
    DASK_SCHEDULER_ADDRESS): everything computed inside goes there."""
    address = compute.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        # the threaded scheduler itself, not its name: given a name, dask imports dask.distributed to
        # look for a client first, a tenth of a second before the first task of a run
        with dask.config.set(scheduler=dask.threaded.get, num_workers=compute.workers):
            yield None
        return
    distributed = require("distributed", "cluster", "a dask.distributed scheduler (compute.scheduler)")
    try:
        client = distributed.Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise PipelineError(
            f"cannot reach the dask scheduler at {address} ({type(e).__name__}): start it, "
            "or run without --scheduler / DASK_SCHEDULER_ADDRESS to use this machine"
        ) from None
    log.info("dask cluster %s, dashboard %s", address, client.dashboard_link)
    try:
        with client.as_current(), dask.config.set(scheduler=client):
            yield client
    except PipelineError:
        raise
    except Exception as e:
        lost = {"CancelledError", "FutureCancelledError", "CommClosedError", "StreamClosedError"}
        if client.status != "running" or lost & {t.__name__ for t in type(e).__mro__}:
            raise PipelineError(
                f"the dask scheduler at {address} stopped answering mid-run ({type(e).__name__}): "
                "restart it and its workers, then run again; no output was replaced"
            ) from None
        raise
    finally:
        client.close()


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        log.info("stage %s ...", stage)
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - t0, 3)
