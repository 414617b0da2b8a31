"""The Celery task and the worker's signals: the task is a thin call into worker/run.py. Messages carry a job
id only; the upload is read from the blob store and the blob is written there."""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from service.jobqueue import FIT_TASK, FIT_TILE_TASK
from worker.context import WorkerContext, torch_threads_per_child
from worker.recovery import Recovery
from worker.run import run_fit
from worker.tiles import run_tile

log = logging.getLogger("tuner.worker")


def register(app: Celery) -> None:
    ctx: WorkerContext = app.tuner  # type: ignore[attr-defined]

    @app.task(name=FIT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def fit_task(self: Task, job_id: str) -> dict[str, Any]:
        return run_fit(ctx, job_id, self.request.id or "local")

    @app.task(name=FIT_TILE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def fit_tile_task(self: Task, job_id: str, tile: int) -> dict[str, Any]:
        return run_tile(ctx, job_id, tile, self.request.id or "local")

    recovery: dict[str, Recovery] = {}

    @worker_ready.connect(weak=False)
    def _start_recovery(sender: Any = None, **_: Any) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            # Forked children would inherit a CUDA context they cannot use (SERVICE_NOTES §2.1).
            log.error("CUDA was initialised in the worker's main process; fits in forked children will fail")
        recovery["thread"] = Recovery(app)
        recovery["thread"].start()

    @worker_shutting_down.connect(weak=False)
    def _stop_recovery(**_: Any) -> None:
        if "thread" in recovery:
            recovery["thread"].stopped.set()

    @worker_process_init.connect(weak=False)
    def _child_init(**_: Any) -> None:
        from worker import fitting  # torch, in the child only

        fitting.set_torch_threads(ctx.settings.fit_threads or torch_threads_per_child(ctx.settings.worker_concurrency))
