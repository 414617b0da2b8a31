"""One delivery of a fit message: claim the job (and, batching, alike queued jobs), load the uploads, fit
them (worker/fitting.py, in the prefork child), store each result (worker/store.py) and settle every job held
exactly once. The dependencies go one way, from here down: fitting and storing return values and record
nothing. Running a job twice is harmless: the job row is claimed atomically, and a finished image is never
fitted again."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from service.estimate import plan_of_job
from service.records import CANCELLED, FAILED, RUNNING, SUCCEEDED, ClaimOutcome, HeartbeatState, Job
from service.storage import BlobNotFound
from tuner_model.core.errors import FitCancelled, TunerError
from tuner_model.core.image_io import load_image
from tuner_model.core.stop import stop_when
from tuner_model.rate.tile_plan import TiledPlan
from worker.context import WorkerContext
from worker.heartbeat import Heartbeat, JobProgress
from worker.store import store_image
from worker.tiles import fan_out

if TYPE_CHECKING:
    from tuner_model.rate.encode import Outcome

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

    def hand_over(self, job: Job, status: str) -> None:
        """`job` is fitted as tiles: its tiles' tasks record it from here on (worker/tiles.py), not this run."""
        self.hb.release(job.id)
        self.results[job.id] = {"job_id": job.id, "status": status, **({"image_id": job.image_id}
                                                                       if status == SUCCEEDED else {})}

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

    @contextmanager
    def job_errors(self, *jobs: Job) -> Iterator[None]:
        """Any error in the block settles `jobs` (cancelled, failed with the library's message, or an
        internal error) and the caller goes on with the other jobs; the soft time limit propagates, so that
        run_fit records every job still held as over time."""
        try:
            yield
        except SoftTimeLimitExceeded:
            raise
        except Exception as e:  # noqa: BLE001 - these jobs' trouble: recorded on them
            for job in jobs:
                self.settle_error(job, e)


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
    lead_job, lead_image = loaded[0]
    # The batch key makes these all alike; checked again on the decoded pixels, which the fit needs.
    alike = [im.shape == lead_image.shape and j.params == lead_job.params for j, im in loaded]
    groups = [[item for item, same in zip(loaded, alike, strict=True) if same]]
    groups += [[item] for item, same in zip(loaded, alike, strict=True) if not same]
    for group in groups:
        _fit(run, group)


def _fit(run: JobRun, items: list[tuple[Job, np.ndarray]]) -> None:
    """One fit of jobs of one shape and parameters (a batch, or a single job): each job is recorded as soon
    as its blob is ready, a job's own error settles that job alone, and a job is cancelled by its own check
    (JobRun.cancelled, as the batch's member check by index)."""
    from worker import fitting  # here, in the child: torch and CUDA are never initialised in the parent

    jobs = [job for job, _ in items]
    with run.job_errors(*jobs):  # a request the encoder refuses fails them all
        plan = plan_of_job(jobs[0], items[0][1].shape, run.ctx.settings)
        if isinstance(plan, TiledPlan):  # never batched (no batch key): one job, its tiles a group of tasks
            run.hand_over(jobs[0], fan_out(run.ctx, jobs[0], run.worker, plan, items[0][1]))
            return
        bars = [JobProgress(run.hb, job.id) for job in jobs]
        for bar in bars:
            bar.start(plan.total_steps)
        with stop_when(member=lambda i: run.cancelled(jobs[i])):
            for i, outcome in fitting.fit([image for _, image in items], plan, run.ctx.settings.fit_device,
                                          lambda i, p: bars[i](p)):
                with run.job_errors(jobs[i]):  # storing this one failed: the others go on
                    _record(run, items[i], outcome, bars[i])


def _record(run: JobRun, item: tuple[Job, np.ndarray], outcome: Outcome, bar: JobProgress) -> None:
    """Stores a fitted job's result and records it as succeeded, or records its error."""
    job, pixels = item
    if outcome.error is not None:
        run.settle_error(job, outcome.error)
        return
    if job.id in run.results:  # settled while its fit ran (cancelled, lost): nothing of it is stored
        return
    assert outcome.fitted is not None and outcome.blob is not None
    psnr = outcome.fitted.meta.get("psnr")
    blob_digest = store_image(run.ctx, job, pixels, outcome.blob, psnr)
    seconds = round(time.perf_counter() - run.started, 3)
    # A fit shorter than one heartbeat never wrote its steps: the record says how many ran.
    done_steps = {"step": bar.steps, "steps": bar.steps} if bar.steps else {}
    log.info("job %s fitted in %.2fs (batch of %d): %d bytes, %.2f dB, blob %s", job.id, seconds,
             outcome.batch_size, len(outcome.blob), psnr, blob_digest[:12])
    run.settle(job, SUCCEEDED, progress=1.0, psnr=psnr, fit_seconds=seconds, batch_size=outcome.batch_size,
               **done_steps)


def _load(run: JobRun, job: Job) -> np.ndarray | None:
    with run.job_errors(job):  # this job's trouble; the others are still fitted
        try:
            data = run.ctx.store.get(f"uploads/{job.upload_digest}")
        except BlobNotFound:
            run.fail(job, "the uploaded image is missing from storage")
            return None
        return load_image(data, run.ctx.settings.max_image_pixels)
    return None
