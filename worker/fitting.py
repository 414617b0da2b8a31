"""The fitting side of a run: the one worker module that imports torch and the encoder. Only the prefork
child that fits imports it (worker/run.py, inside the task): a CUDA context created in the parent would
poison every forked child (SERVICE_NOTES §2.1)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded

from service.comparisons import make_comparisons
from service.records import Image, Job, JobState
from service.settings import Settings
from service.storage import ensure_content, put_content
from service.testhooks import pause_point
from tuner_model.codec import read_info
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import TunerError
from tuner_model.core.stop import stop_when
from tuner_model.models.fitted import FittedImage
from tuner_model.rate.batch import iter_encode_batch
from tuner_model.rate.effort import effort_plan
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings
from worker.errors import job_errors
from worker.heartbeat import JobProgress

if TYPE_CHECKING:
    from worker.run import JobRun

log = logging.getLogger("tuner.worker")


def set_torch_threads(n: int) -> None:
    """Each prefork child's share of the CPU (called when the child starts)."""
    torch.set_num_threads(n)


def batching_applies(settings: Settings) -> bool:
    if settings.fit_batch_on_cpu:
        return True
    try:
        return resolve_device(settings.fit_device).type == "cuda"
    except TunerError:  # e.g. CUDA asked for and absent: each fit reports that itself
        return False


def store(run: JobRun, job: Job, fitted: FittedImage, blob: bytes, batch_size: int,
          progress: JobProgress, image: np.ndarray) -> dict[str, Any]:
    """Writes the blob, the classical codecs' files at the same bytes (TUNER_COMPARISONS) and the image row,
    and records the job as succeeded. The blob is content-addressed and may be shared with other tenants'
    images: until the image row exists, any of them may be deleted and take the blob with it, so the row is
    written in one transaction with a check that the blob is (still) stored, under the blob's lock."""
    store_ = run.ctx.store
    blob_digest = put_content(store_, "blobs", blob)
    comparisons = (make_comparisons(image, len(blob), job.image_id, store_)
                   if run.ctx.settings.comparisons else None)
    info = read_info(blob)
    params = job.params or {}
    pause_point("worker-before-image-row")  # tests only: a delete elsewhere may land here
    run.ctx.db.add_image_with_blob(
        Image(id=job.image_id, tenant=job.tenant, width=info.width, height=info.height, channels=info.channels,
              bytes=len(blob), bpp=round(info.bpp, 5), psnr=fitted.meta.get("psnr"), parameters=info.parameters,
              params=params, blob_digest=blob_digest, source="fit", job_id=job.id, created_at=time.time(),
              comparisons=comparisons, name=job.name),
        lambda _digest: ensure_content(store_, "blobs", blob))
    seconds = round(time.perf_counter() - run.started, 3)
    # A fit shorter than one heartbeat never wrote its steps: the record says how many ran.
    done_steps = {"step": progress.steps, "steps": progress.steps} if progress.steps else {}
    log.info("job %s fitted in %.2fs (batch of %d): %d bytes, %.2f dB", job.id, seconds, batch_size, len(blob),
             fitted.meta.get("psnr"))
    return {**run.settle(job, JobState.SUCCEEDED, progress=1.0, psnr=fitted.meta.get("psnr"), fit_seconds=seconds,
                         batch_size=batch_size, **done_steps), "blob": blob_digest}


def encode_settings(settings: Settings, job: Job) -> EncodeSettings:
    params = job.params or {}
    effort = params.get("effort")  # absent from jobs queued before it existed: the default
    return EncodeSettings(bpp=params.get("bpp"), psnr=params.get("psnr"),
                          steps=params.get("steps") or settings.default_steps, device=settings.fit_device,
                          **({} if effort is None else {"effort": effort}))


def _planned_steps(settings: EncodeSettings) -> int:
    """The total the encoder's progress counts to (one attempt's float fit and fine-tuning)."""
    plan = effort_plan(settings.effort, settings.steps)
    return plan.steps + plan.qat_steps


def fit_alone(run: JobRun, job: Job, image: np.ndarray, progress: JobProgress | None = None) -> None:
    progress = progress or JobProgress(run.hb, job.id)
    with job_errors(run, job):  # recorded on the job (TunerError: as it is; others: internal)
        settings = encode_settings(run.ctx.settings, job)
        progress.start(_planned_steps(settings))
        with stop_when(lambda: "cancelled" if run.cancelled(job) else None):
            fitted, blob = encode(image, settings, progress=progress)
        store(run, job, fitted, blob, 1, progress, image)


def fit_together(run: JobRun, items: list[tuple[Job, np.ndarray]]) -> None:
    """One batched fit (`encode_batch`); each job is recorded as soon as its blob is ready. Should the batch
    itself break, the jobs not yet recorded are fitted one at a time rather than all failed."""
    jobs = [j for j, _ in items]
    progress = [JobProgress(run.hb, j.id) for j in jobs]
    try:
        settings = encode_settings(run.ctx.settings, jobs[0])
        for bar in progress:
            bar.start(_planned_steps(settings))
        with stop_when(member=lambda i: run.cancelled(jobs[i])):  # each blob is stored as soon as it is ready
            for i, outcome in iter_encode_batch([im for _, im in items], settings,
                                                progress=lambda i, p: progress[i](p)):
                if outcome.error is not None:
                    run.settle_error(jobs[i], outcome.error)
                    continue
                with job_errors(run, jobs[i]):  # storing this one failed; the others go on
                    store(run, jobs[i], outcome.fitted, outcome.blob, outcome.batch_size, progress[i], items[i][1])
    except SoftTimeLimitExceeded:
        raise
    except Exception:  # noqa: BLE001 - a bug or a device error in the batched path: fit the rest alone
        log.exception("batched fit of %d jobs failed; fitting them one at a time", len(jobs))
        for (job, image), job_progress in zip(items, progress, strict=True):
            if job.id not in run.results:
                fit_alone(run, job, image, job_progress)  # the same bar: it never goes backwards
