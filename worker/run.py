"""One delivery of a fit message: claim the job (and, batching, alike queued jobs), load the uploads, fit,
store, and settle every job held exactly once. Running a job twice is harmless: the job row is claimed
atomically, and a finished image is never fitted again."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from service.records import CANCELLED, FAILED, RUNNING, SUCCEEDED, ClaimOutcome, HeartbeatState, Job
from service.storage import BlobNotFound
from tuner_model.core.errors import FitCancelled, TunerError
from tuner_model.core.image_io import load_image
from worker.context import WorkerContext
from worker.errors import job_errors
from worker.heartbeat import Heartbeat

log = logging.getLogger("tuner.worker")


class JobRun:
    """The jobs one task holds (its own and, batched, the ones it took with it) and how each one ended.
    Every job is settled exactly once: recorded as succeeded, failed or cancelled, or left alone when lost."""

    def __init__(self, ctx: WorkerContext, worker: str, jobs: list[Job]) -> None:
        self.ctx, self.worker, self.jobs = ctx, worker, jobs
        self.hb = Heartbeat(ctx, [j.id for j in jobs], worker)
        self.started = time.perf_counter()
        self.results: dict[str, dict[str, Any]] = {}

    def unsettled(self) -> list[Job]:
        return [j for j in self.jobs if j.id not in self.results]

    def settle(self, job: Job, status: str, **values: Any) -> dict[str, Any]:
        if job.id in self.results:
            return self.results[job.id]
        self.hb.release(job.id)
        if status == HeartbeatState.LOST:  # the job is another worker's now: nothing of ours to record
            result: dict[str, Any] = {"job_id": job.id, "status": "lost"}
        else:  # nothing is left to wait for: 0 s once succeeded, and no estimate for a job that stopped
            self.ctx.db.finish_job(job.id, self.worker, status, **{"eta_s": 0.0 if status == SUCCEEDED else None,
                                                                   **values})
            result = {"job_id": job.id, "status": str(status), **({"image_id": job.image_id} if status == SUCCEEDED
                                                              else {})}
        self.results[job.id] = result
        return result

    def fail(self, job: Job, error: str) -> dict[str, Any]:
        return self.settle(job, FAILED, error=error)

    def cancelled(self, job: Job) -> bool:
        """Whether `job`'s fit is to stop (the fit's stop check, core/stop.py). The first time it answers yes,
        the job is recorded cancelled at once: in a batch the other fits go on, and the client still sees the
        cancel within a heartbeat."""
        reason = self.hb.stop_reason(job.id)
        if reason is None:
            return False
        self.settle(job, HeartbeatState.LOST if reason == HeartbeatState.LOST else CANCELLED, error="cancelled")
        return True

    def settle_error(self, job: Job, error: Exception) -> dict[str, Any]:
        if isinstance(error, FitCancelled):
            lost = self.hb.stop_reason(job.id) == HeartbeatState.LOST
            return self.settle(job, HeartbeatState.LOST if lost else CANCELLED, error="cancelled")
        if isinstance(error, TunerError):
            return self.fail(job, str(error))
        log.error("job %s failed", job.id, exc_info=error)
        return self.fail(job, f"internal error ({type(error).__name__})")


def run_fit(ctx: WorkerContext, job_id: str, delivery: str) -> dict[str, Any]:
    settings, db = ctx.settings, ctx.db
    worker = f"{socket.gethostname()}:{os.getpid()}:{delivery}"
    state, job = _claim_fairly(ctx, job_id, worker)
    job_id = job.id if job is not None else job_id
    if state != ClaimOutcome.CLAIMED or job is None:
        log.info("job %s not run: %s", job_id, state)
        return {"job_id": job_id, "status": str(job.status) if job else "missing", "skipped": str(state)}

    if db.get_image(job.image_id) is not None:  # an earlier run got as far as the image: nothing to fit
        db.finish_job(job_id, worker, SUCCEEDED, progress=1.0, eta_s=0.0)
        return {"job_id": job_id, "status": str(SUCCEEDED), "image_id": job.image_id}

    run = JobRun(ctx, worker, [job, *_claim_partners(ctx, job, worker)])
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


def _claim_fairly(ctx: WorkerContext, job_id: str, worker: str) -> tuple[ClaimOutcome, Job | None]:
    """Claims a job for this delivery. A message is a token for one queued job, not an order: with
    TUNER_FAIR_SCHEDULING the delivery runs the queued job that is fairest across tenants (records/fair.py),
    and the message's own job runs on another job's message (each delivery runs one queued job, and every
    queued job had one message, so none is left without). A running job whose worker stopped beating (a
    recovery re-send) is claimed as it is."""
    settings, db = ctx.settings, ctx.db
    own = db.get_job(job_id) if settings.fair_scheduling else None
    recovering = own is not None and own.status == RUNNING and (own.heartbeat_at or 0) < time.time() - \
        settings.stale_after_s
    if own is not None and not recovering:
        for _ in range(3):  # another worker may claim the same pick first: pick again
            pick = db.fair_next_job(settings.max_attempts)
            if pick is None:
                break
            state, job = db.claim_job(pick, worker, settings.stale_after_s, settings.max_attempts)
            if state == ClaimOutcome.CLAIMED:
                if pick != job_id:
                    log.info("message for job %s runs job %s (fair across tenants)", job_id, pick)
                return state, job
    return db.claim_job(job_id, worker, settings.stale_after_s, settings.max_attempts)


def _batching_applies(settings: Any) -> bool:
    from worker import fitting  # resolving the device imports torch: only in the child that fits

    return fitting.batching_applies(settings)


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


def _fit_jobs(run: JobRun) -> None:
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
    from worker import fitting  # here, in the child: torch and CUDA are never initialised in the parent

    lead_job, lead_image = loaded[0]
    # The batch key makes these all alike; checked again on the decoded pixels, which the fit needs.
    alike = [im.shape == lead_image.shape and j.params == lead_job.params for j, im in loaded]
    if sum(alike) > 1:
        fitting.fit_together(run, [item for item, same in zip(loaded, alike, strict=True) if same])
        loaded = [item for item, same in zip(loaded, alike, strict=True) if not same]
    for job, image in loaded:
        fitting.fit_alone(run, job, image)


def _load(run: JobRun, job: Job) -> np.ndarray | None:
    with job_errors(run, job):  # this job's trouble; the others are still fitted
        try:
            data = run.ctx.store.get(f"uploads/{job.upload_digest}")
        except BlobNotFound:
            run.fail(job, "the uploaded image is missing from storage")
            return None
        return load_image(data, run.ctx.settings.max_image_pixels)
    return None
