"""The fit task. Messages carry a job id only; the upload is read from the blob store and the blob is
written there; the task returns a small record. Running a job twice is harmless: the job row is claimed
atomically, and a finished image is never fitted again."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from service.db import CANCELLED, FAILED, SUCCEEDED, Image
from service.storage import BlobNotFound, put_content

from .app import FIT_QUEUE, FIT_TASK, WorkerContext, torch_threads_per_child

log = logging.getLogger("tuner.worker")


class _Heartbeat(threading.Thread):
    """Writes liveness and the latest progress to the job row every few seconds, and reads back whether the
    job was cancelled or taken away: the fit loop only polls the resulting flag (no database per step)."""

    def __init__(self, ctx: WorkerContext, job_id: str, worker: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.ctx, self.job_id, self.worker = ctx, job_id, worker
        self.values: dict[str, Any] = {}
        self.stop_reason: str | None = None  # "cancel" or "lost"
        self._done = threading.Event()
        self._lock = threading.Lock()

    def report(self, **values: Any) -> None:
        with self._lock:
            self.values.update(values)

    def beat(self) -> None:
        with self._lock:
            values, self.values = self.values, {}
        try:
            state = self.ctx.db.heartbeat(self.job_id, self.worker, **values)
        except Exception:  # noqa: BLE001 - a missed beat is retried; the fit goes on
            log.exception("heartbeat failed for %s", self.job_id)
            return
        if state != "ok":
            self.stop_reason = state

    def run(self) -> None:
        while not self._done.wait(self.ctx.settings.heartbeat_s):
            self.beat()

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=5)


def run_fit(ctx: WorkerContext, job_id: str, delivery: str) -> dict[str, Any]:
    settings, db, store = ctx.settings, ctx.db, ctx.store
    worker = f"{socket.gethostname()}:{os.getpid()}:{delivery}"
    state, job = db.claim_job(job_id, worker, settings.stale_after_s, settings.max_attempts)
    if state != "claimed" or job is None:
        log.info("job %s not run: %s", job_id, state)
        return {"job_id": job_id, "status": job.status if job else "missing", "skipped": state}

    if db.get_image(job.image_id) is not None:  # an earlier run got as far as the image: nothing to fit
        db.finish_job(job_id, worker, SUCCEEDED, progress=1.0)
        return {"job_id": job_id, "status": SUCCEEDED, "image_id": job.image_id}

    # Imported here so that torch, and CUDA, are only ever initialised in the child that fits.
    from tuner_model.codec import read_info
    from tuner_model.encoder import EncodeSettings, encode
    from tuner_model.errors import FitCancelled, TunerError
    from tuner_model.image_io import load_image

    hb = _Heartbeat(ctx, job_id, worker)
    hb.start()
    started = time.perf_counter()
    best: dict[str, Any] = {"progress": 0.0, "steps": None}

    def progress(p: Any) -> None:
        frac = min(0.99, max(best["progress"], p.step / max(1, p.steps)))
        best["progress"], best["steps"] = frac, p.steps
        hb.report(progress=frac, step=p.step, steps=p.steps, psnr=round(float(p.psnr), 3))

    try:
        try:
            data = store.get(f"uploads/{job.upload_digest}")
        except BlobNotFound:
            db.finish_job(job_id, worker, FAILED, error="the uploaded image is missing from storage")
            return {"job_id": job_id, "status": FAILED}
        image = load_image(data, settings.max_image_pixels)
        params = job.params or {}
        es = EncodeSettings(bpp=params.get("bpp"), psnr=params.get("psnr"),
                            steps=params.get("steps") or settings.default_steps, device=settings.fit_device)
        fitted, blob = encode(image, es, progress=progress, should_cancel=lambda: hb.stop_reason is not None)
        blob_digest = put_content(store, "blobs", blob)
        info = read_info(blob)
        db.add_image(Image(id=job.image_id, width=info.width, height=info.height, channels=info.channels,
                           bytes=len(blob), bpp=round(info.bpp, 5), psnr=fitted.meta.get("psnr"),
                           parameters=info.parameters, params=params, blob_digest=blob_digest, source="fit",
                           job_id=job_id, created_at=time.time()))
        seconds = round(time.perf_counter() - started, 3)
        # A fit shorter than one heartbeat never wrote its steps: the record says how many ran.
        done_steps = {"step": best["steps"], "steps": best["steps"]} if best["steps"] else {}
        db.finish_job(job_id, worker, SUCCEEDED, progress=1.0, psnr=fitted.meta.get("psnr"), fit_seconds=seconds,
                      **done_steps)
        log.info("job %s fitted in %.2fs: %d bytes, %.2f dB", job_id, seconds, len(blob), fitted.meta.get("psnr"))
        return {"job_id": job_id, "status": SUCCEEDED, "image_id": job.image_id, "blob": blob_digest}
    except FitCancelled:
        if hb.stop_reason == "lost":
            return {"job_id": job_id, "status": "lost"}
        db.finish_job(job_id, worker, CANCELLED, error="cancelled")
        return {"job_id": job_id, "status": CANCELLED}
    except SoftTimeLimitExceeded:
        db.finish_job(job_id, worker, FAILED, error=f"the fit exceeded its time limit of "
                                                    f"{settings.soft_time_limit_s} s")
        return {"job_id": job_id, "status": FAILED}
    except TunerError as e:
        db.finish_job(job_id, worker, FAILED, error=str(e))
        return {"job_id": job_id, "status": FAILED}
    except Exception as e:
        log.exception("job %s failed", job_id)
        db.finish_job(job_id, worker, FAILED, error=f"internal error ({type(e).__name__})")
        return {"job_id": job_id, "status": FAILED}
    finally:
        hb.finish()


class _Recovery(threading.Thread):
    """Runs in the worker's main process: puts running jobs whose worker stopped beating (SIGKILL, lost
    machine) back on the queue, so they don't wait for the broker's long visibility timeout; and sends
    again queued jobs whose message may have been lost, so no accepted job waits forever."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True, name="tuner-recovery")
        self.app = app
        self.ctx: WorkerContext = app.tuner  # type: ignore[attr-defined]
        self.stopped = threading.Event()

    def scan(self) -> list[str]:
        settings = self.ctx.settings
        stale = self.ctx.db.requeue_stale(settings.stale_after_s)
        for job_id in stale:
            log.warning("job %s: worker stopped beating; sending it again", job_id)
        waiting = self.ctx.db.resend_due(settings.resend_queued_after_s)
        for job_id in waiting:
            log.warning("job %s: still queued %.0f s after its last send; sending it again", job_id,
                        settings.resend_queued_after_s)
        for job_id in stale + waiting:
            try:
                self.app.send_task(FIT_TASK, args=[job_id], queue=FIT_QUEUE)
            except Exception:  # noqa: BLE001 - the job stays queued, stamped as sent; a later scan retries it
                log.exception("could not send job %s; retrying in %.0f s", job_id,
                              settings.resend_queued_after_s)
        return stale + waiting

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a failed scan is retried on the next interval
                log.exception("recovery scan failed")
            self.stopped.wait(self.ctx.settings.recovery_interval_s)


def register(app: Celery) -> None:
    ctx: WorkerContext = app.tuner  # type: ignore[attr-defined]

    @app.task(name=FIT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def fit_task(self: Task, job_id: str) -> dict[str, Any]:
        return run_fit(ctx, job_id, self.request.id or "local")

    recovery: dict[str, _Recovery] = {}

    @worker_ready.connect(weak=False)
    def _start_recovery(sender: Any = None, **_: Any) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            # Forked children would inherit a CUDA context they cannot use (SERVICE_NOTES §2.1).
            log.error("CUDA was initialised in the worker's main process; fits in forked children will fail")
        recovery["thread"] = _Recovery(app)
        recovery["thread"].start()

    @worker_shutting_down.connect(weak=False)
    def _stop_recovery(**_: Any) -> None:
        if "thread" in recovery:
            recovery["thread"].stopped.set()

    @worker_process_init.connect(weak=False)
    def _child_init(**_: Any) -> None:
        import torch

        torch.set_num_threads(torch_threads_per_child(ctx.settings.worker_concurrency))
