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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from service.db import CANCELLED, FAILED, SUCCEEDED, Image, Job
from service.settings import Settings
from service.storage import BlobNotFound, put_content
from tuner_model.rate.effort import seconds_left  # no torch: the parent process may import it

from .app import FIT_QUEUE, FIT_TASK, WorkerContext, torch_threads_per_child

if TYPE_CHECKING:  # torch and the library are imported in the child that fits, not here
    import numpy as np

    from tuner_model.models.fitted import FittedImage
    from tuner_model.rate.request import EncodeSettings

log = logging.getLogger("tuner.worker")

def eta_seconds(elapsed: float, frac: float) -> float | None:
    """A job's `eta_s`: tuner_model.effort.seconds_left to a tenth of a second."""
    left = seconds_left(elapsed, frac)
    return None if left is None else round(left, 1)


class _Heartbeat(threading.Thread):
    """Writes liveness, the latest progress and the ETA of each job a task holds to its row every few
    seconds (and at once when a fit starts), and reads back whether each was cancelled or taken away: the
    fit loop only polls the resulting flags (no database per step). One thread serves every job of a batch."""

    def __init__(self, ctx: WorkerContext, job_ids: list[str], worker: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_ids[0]}")
        self.ctx, self.worker = ctx, worker
        self._jobs = list(job_ids)  # those still held: a settled job is released
        self._values: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, _JobProgress] = {}  # the fits under way, whose ETA each beat writes
        self._reasons: dict[str, str] = {}  # job id -> "cancel" or "lost"
        self._done = threading.Event()
        self._wake = threading.Event()  # beat now rather than at the end of the interval
        self._lock = threading.Lock()

    def report(self, job_id: str, *, now: bool = False, **values: Any) -> None:
        with self._lock:
            self._values.setdefault(job_id, {}).update(values)
        if now:
            self._wake.set()

    def track(self, progress: _JobProgress) -> None:
        with self._lock:
            self._progress[progress.job_id] = progress

    def stop_reason(self, job_id: str) -> str | None:
        return self._reasons.get(job_id)

    def release(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs.remove(job_id)
            self._values.pop(job_id, None)
            self._progress.pop(job_id, None)

    def beat(self) -> None:
        with self._lock:
            jobs, values, self._values = list(self._jobs), self._values, {}
            etas = {job_id: p.eta() for job_id, p in self._progress.items()}
        for job_id in jobs:
            row = values.get(job_id, {})
            if job_id in etas:
                row = {**row, "eta_s": etas[job_id]}
            try:
                state = self.ctx.db.heartbeat(job_id, self.worker, **row)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the fit goes on
                log.exception("heartbeat failed for %s", job_id)
                continue
            if state != "ok":
                self._reasons[job_id] = state

    def run(self) -> None:
        while not self._done.is_set():  # the first beat at once, then every heartbeat_s or when woken
            self.beat()
            self._wake.wait(self.ctx.settings.heartbeat_s)
            self._wake.clear()  # a report after this is in the next beat, which comes at once

    def finish(self) -> None:
        self._done.set()
        self._wake.set()
        self.join(timeout=5)


class _JobProgress:
    """One job's progress as its heartbeat reports it: monotonic, and below 1 until the job is recorded;
    and its ETA, from the time since its fit started."""

    def __init__(self, hb: _Heartbeat, job_id: str) -> None:
        self.hb, self.job_id = hb, job_id
        self.frac, self.steps = 0.0, None
        self.started: float | None = None  # time.monotonic() when the fit began

    def start(self, planned_steps: int) -> None:
        """The fit begins: step 0 is written by a beat right away, so a client sees the job under way before
        the first steps report (on a large image they take seconds). A later start (a batch's member fitted
        alone after the batch broke) keeps the first one's clock and bar."""
        if self.started is not None:
            return
        self.started = time.monotonic()
        self.hb.track(self)
        self.hb.report(self.job_id, now=True, progress=self.frac, step=0, steps=planned_steps)

    def eta(self) -> float | None:
        return None if self.started is None else eta_seconds(time.monotonic() - self.started, self.frac)

    def __call__(self, p: Any) -> None:
        self.frac = min(0.99, max(self.frac, p.step / max(1, p.steps)))
        self.steps = p.steps
        self.hb.report(self.job_id, progress=self.frac, step=p.step, steps=p.steps, psnr=round(float(p.psnr), 3))


class _Run:
    """The jobs one task holds (its own and, batched, the ones it took with it) and how each one ended.
    Every job is settled exactly once: recorded as succeeded, failed or cancelled, or left alone when lost."""

    def __init__(self, ctx: WorkerContext, worker: str, jobs: list[Job]) -> None:
        self.ctx, self.worker, self.jobs = ctx, worker, jobs
        self.hb = _Heartbeat(ctx, [j.id for j in jobs], worker)
        self.started = time.perf_counter()
        self.results: dict[str, dict[str, Any]] = {}

    def unsettled(self) -> list[Job]:
        return [j for j in self.jobs if j.id not in self.results]

    def settle(self, job: Job, status: str, **values: Any) -> dict[str, Any]:
        if job.id in self.results:
            return self.results[job.id]
        self.hb.release(job.id)
        if status == "lost":  # the job is another worker's now: nothing of ours to record
            result: dict[str, Any] = {"job_id": job.id, "status": "lost"}
        else:  # nothing is left to wait for: 0 s once succeeded, and no estimate for a job that stopped
            self.ctx.db.finish_job(job.id, self.worker, status, **{"eta_s": 0.0 if status == SUCCEEDED else None,
                                                                   **values})
            result = {"job_id": job.id, "status": status, **({"image_id": job.image_id} if status == SUCCEEDED
                                                              else {})}
        self.results[job.id] = result
        return result

    def fail(self, job: Job, error: str) -> dict[str, Any]:
        return self.settle(job, FAILED, error=error)

    def cancel_check(self, job: Job) -> Callable[[], bool]:
        """The fit's should_cancel for `job`. The first time it answers yes, the job is recorded cancelled
        at once: in a batch the other fits go on, and the client still sees the cancel within a heartbeat."""
        def check() -> bool:
            reason = self.hb.stop_reason(job.id)
            if reason is None:
                return False
            self.settle(job, "lost" if reason == "lost" else CANCELLED, error="cancelled")
            return True

        return check

    def settle_error(self, job: Job, error: Exception) -> dict[str, Any]:
        from tuner_model.core.errors import FitCancelled, TunerError

        if isinstance(error, FitCancelled):
            return self.settle(job, "lost" if self.hb.stop_reason(job.id) == "lost" else CANCELLED, error="cancelled")
        if isinstance(error, TunerError):
            return self.fail(job, str(error))
        log.error("job %s failed", job.id, exc_info=error)
        return self.fail(job, f"internal error ({type(error).__name__})")

    def store(self, job: Job, fitted: FittedImage, blob: bytes, batch_size: int,
              progress: _JobProgress) -> dict[str, Any]:
        """Writes the blob and the image row, and records the job as succeeded."""
        from tuner_model.codec import read_info

        blob_digest = put_content(self.ctx.store, "blobs", blob)
        info = read_info(blob)
        params = job.params or {}
        self.ctx.db.add_image(Image(id=job.image_id, width=info.width, height=info.height, channels=info.channels,
                                    bytes=len(blob), bpp=round(info.bpp, 5), psnr=fitted.meta.get("psnr"),
                                    parameters=info.parameters, params=params, blob_digest=blob_digest,
                                    source="fit", job_id=job.id, created_at=time.time()))
        seconds = round(time.perf_counter() - self.started, 3)
        # A fit shorter than one heartbeat never wrote its steps: the record says how many ran.
        done_steps = {"step": progress.steps, "steps": progress.steps} if progress.steps else {}
        log.info("job %s fitted in %.2fs (batch of %d): %d bytes, %.2f dB", job.id, seconds, batch_size, len(blob),
                 fitted.meta.get("psnr"))
        return {**self.settle(job, SUCCEEDED, progress=1.0, psnr=fitted.meta.get("psnr"), fit_seconds=seconds,
                              batch_size=batch_size, **done_steps), "blob": blob_digest}


def run_fit(ctx: WorkerContext, job_id: str, delivery: str) -> dict[str, Any]:
    settings, db = ctx.settings, ctx.db
    worker = f"{socket.gethostname()}:{os.getpid()}:{delivery}"
    state, job = db.claim_job(job_id, worker, settings.stale_after_s, settings.max_attempts)
    if state != "claimed" or job is None:
        log.info("job %s not run: %s", job_id, state)
        return {"job_id": job_id, "status": job.status if job else "missing", "skipped": state}

    if db.get_image(job.image_id) is not None:  # an earlier run got as far as the image: nothing to fit
        db.finish_job(job_id, worker, SUCCEEDED, progress=1.0, eta_s=0.0)
        return {"job_id": job_id, "status": SUCCEEDED, "image_id": job.image_id}

    run = _Run(ctx, worker, [job, *_claim_partners(ctx, job, worker)])
    run.hb.start()
    try:
        _fit_jobs(run)
    except SoftTimeLimitExceeded:
        for j in run.unsettled():
            run.fail(j, f"the fit exceeded its time limit of {settings.soft_time_limit_s} s")
    except Exception as e:  # noqa: BLE001 - each job held gets a record, whatever went wrong
        for j in run.unsettled():
            run.settle_error(j, e)
    finally:
        run.hb.finish()
    result = dict(run.results.get(job_id, {"job_id": job_id, "status": "unknown"}))
    if len(run.jobs) > 1:
        result["batch"] = [j.id for j in run.jobs]
    return result


def _claim_partners(ctx: WorkerContext, job: Job, worker: str) -> list[Job]:
    """Queued jobs of the same shape and parameters that this worker takes to fit with `job`, when
    batching pays here (a GPU, or TUNER_FIT_BATCH_ON_CPU)."""
    settings = ctx.settings
    if settings.fit_batch_max < 2 or not job.batch_key or not _batching_applies(settings):
        return []
    try:
        partners = ctx.db.claim_batch(job.batch_key, worker, settings.fit_batch_max - 1, settings.max_attempts)
    except Exception:  # noqa: BLE001 - fit this job alone; a partner claimed before the error goes stale and
        log.exception("job %s: could not take queued jobs to batch with it", job.id)  # is sent again
        return []
    if partners:
        log.info("job %s: fitting %d queued jobs of the same shape with it: %s", job.id, len(partners),
                 ", ".join(p.id for p in partners))
    return partners


def _batching_applies(settings: Settings) -> bool:
    if settings.fit_batch_on_cpu:
        return True
    # Imported here: torch, and CUDA, are only ever initialised in the child that fits.
    from tuner_model.core.device import resolve_device
    from tuner_model.core.errors import TunerError

    try:
        return resolve_device(settings.fit_device).type == "cuda"
    except TunerError:  # e.g. CUDA asked for and absent: each fit reports that itself
        return False


def _fit_jobs(run: _Run) -> None:
    """Loads each job's upload (a job whose upload is missing or bad fails alone), then fits the jobs of the
    first job's shape and parameters together and any others one at a time."""
    loaded: list[tuple[Job, np.ndarray]] = []
    for job in run.jobs:
        if run.ctx.db.get_image(job.image_id) is not None:  # finished by an earlier run
            run.settle(job, SUCCEEDED, progress=1.0)
            continue
        image = _load(run, job)
        if image is not None:
            loaded.append((job, image))
    if not loaded:
        return
    lead_job, lead_image = loaded[0]
    # The batch key makes these all alike; checked again on the decoded pixels, which the fit needs.
    alike = [im.shape == lead_image.shape and j.params == lead_job.params for j, im in loaded]
    if sum(alike) > 1:
        _fit_together(run, [item for item, same in zip(loaded, alike, strict=True) if same])
        loaded = [item for item, same in zip(loaded, alike, strict=True) if not same]
    for job, image in loaded:
        _fit_alone(run, job, image)


def _load(run: _Run, job: Job) -> np.ndarray | None:
    from tuner_model.core.image_io import load_image

    try:
        data = run.ctx.store.get(f"uploads/{job.upload_digest}")
    except BlobNotFound:
        run.fail(job, "the uploaded image is missing from storage")
        return None
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - this job's trouble; the others are still fitted
        run.settle_error(job, e)
        return None
    try:
        return load_image(data, run.ctx.settings.max_image_pixels)
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - as above
        run.settle_error(job, e)
        return None


def _encode_settings(settings: Settings, job: Job) -> EncodeSettings:
    from tuner_model.rate.request import EncodeSettings

    params = job.params or {}
    effort = params.get("effort")  # absent from jobs queued before it existed: the default
    return EncodeSettings(bpp=params.get("bpp"), psnr=params.get("psnr"),
                          steps=params.get("steps") or settings.default_steps, device=settings.fit_device,
                          **({} if effort is None else {"effort": effort}))


def _planned_steps(settings: EncodeSettings) -> int:
    """The total the encoder's progress counts to (one attempt's float fit and fine-tuning)."""
    from tuner_model.rate.effort import effort_plan

    plan = effort_plan(settings.effort, settings.steps)
    return plan.steps + plan.qat_steps


def _fit_alone(run: _Run, job: Job, image: np.ndarray, progress: _JobProgress | None = None) -> None:
    from tuner_model.rate.encode import encode

    progress = progress or _JobProgress(run.hb, job.id)
    try:
        settings = _encode_settings(run.ctx.settings, job)
        progress.start(_planned_steps(settings))
        fitted, blob = encode(image, settings, progress=progress, should_cancel=run.cancel_check(job))
        run.store(job, fitted, blob, 1, progress)
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - recorded on the job (TunerError: as it is; others: internal)
        run.settle_error(job, e)


def _fit_together(run: _Run, items: list[tuple[Job, np.ndarray]]) -> None:
    """One batched fit (`encode_batch`); each job is recorded as soon as its blob is ready. Should the batch
    itself break, the jobs not yet recorded are fitted one at a time rather than all failed."""
    from tuner_model.rate.batch import iter_encode_batch

    jobs = [j for j, _ in items]
    progress = [_JobProgress(run.hb, j.id) for j in jobs]
    try:
        settings = _encode_settings(run.ctx.settings, jobs[0])
        for bar in progress:
            bar.start(_planned_steps(settings))
        for i, outcome in iter_encode_batch([im for _, im in items], settings,
                                            progress=lambda i, p: progress[i](p),
                                            should_cancel=[run.cancel_check(j) for j in jobs]):
            if outcome.error is not None:
                run.settle_error(jobs[i], outcome.error)
                continue
            try:
                run.store(jobs[i], outcome.fitted, outcome.blob, outcome.batch_size, progress[i])
            except SoftTimeLimitExceeded:
                raise
            except Exception as e:  # noqa: BLE001 - storing this one failed; the others go on
                run.settle_error(jobs[i], e)
    except SoftTimeLimitExceeded:
        raise
    except Exception:  # noqa: BLE001 - a bug or a device error in the batched path: fit the rest alone
        log.exception("batched fit of %d jobs failed; fitting them one at a time", len(jobs))
        for (job, image), job_progress in zip(items, progress, strict=True):
            if job.id not in run.results:
                _fit_alone(run, job, image, job_progress)  # the same bar: it never goes backwards


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
