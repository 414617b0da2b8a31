"""Submitting an upload for fitting: deduplication, idempotency, admission (time limit, back-pressure), the job
row, the message, and compensation when the queue is down. The route reads the upload and the parameters
and builds the response; this decides what happens to the request."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from celery import Celery

from service.estimate import estimate_fit_seconds, fit_slots, job_plan, over_time_limit
from service.jobqueue import send_fit
from service.records import ACTIVE, LOCAL_TENANT, QUEUED, SUCCEEDED, Database, Job, new_job_id
from service.settings import Settings
from service.storage import BlobStore, digest, put_content
from service.testhooks import pause_point
from tuner_model.rate.request import EncodeRequest

log = logging.getLogger("tuner.api")


@dataclass(frozen=True)
class Upload:
    data: bytes
    width: int
    height: int
    channels: int
    params: EncodeRequest
    idempotency_key: str | None = None
    tenant: str = LOCAL_TENANT
    name: str | None = None  # for people (the gallery); not part of what makes two uploads the same


@dataclass(frozen=True)
class Submitted:
    job: Job
    deduplicated: bool  # an identical request (or the same Idempotency-Key) was accepted before: its job


class SubmitRefused(Exception):
    """The request is refused: an HTTP status, a one-line reason, and headers such as Retry-After."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None,
                 problem: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers
        self.problem = problem  # the problem type's name (service/api/problem_types.py)


def tenant_scoped(tenant: str, value: str) -> str:
    """`value` within a tenant: the same bytes (or Idempotency-Key) from two tenants are two things. The local
    tenant keeps the unscoped value, so the ids of a service from before tenants existed stay as they were."""
    return value if tenant == LOCAL_TENANT else f"{tenant}\x1f{value}"


def idempotency_record_key(tenant: str, key: str) -> str:
    return hashlib.sha256(tenant_scoped(tenant, key).encode()).hexdigest()


def check_quota(db: Database, settings: Settings, tenant: str, adding: int = 0) -> None:
    """Raises SubmitRefused(403) when what the tenant stores (blobs, and originals while they are kept) is at
    (or `adding` would pass) its quota."""
    quota = settings.max_stored_bytes_per_tenant
    if quota and db.stored_bytes(tenant, time.time() - settings.upload_retention_s) + adding > quota:
        raise SubmitRefused(403, f"storage quota of {quota} bytes reached; delete images to make room",
                            problem="quota")


def submit_upload(upload: Upload, settings: Settings, db: Database, store: BlobStore, celery: Celery) -> Submitted:
    """The job for `upload`: an earlier one when the request repeats, else a new queued job whose message is
    sent. Raises SubmitRefused (403 quota, 422 time limit or reused key, 429 back-pressure, 503 queue down)."""
    # Dedupe works on the records, so an upload is stored only when a new job will need it (below).
    upload_digest = digest(upload.data)
    canonical = json.dumps(upload.params.canonical(), sort_keys=True)
    fingerprint = hashlib.sha256(tenant_scoped(upload.tenant, f"{upload_digest}|{canonical}").encode()).hexdigest()
    image_id = "img_" + fingerprint[:32]
    id_key = idempotency_record_key(upload.tenant, upload.idempotency_key) if upload.idempotency_key else None
    earlier = _earlier_job(db, id_key, fingerprint, image_id)
    if earlier is not None:
        if id_key is not None:
            _remember(db, id_key, fingerprint, earlier)
        return Submitted(earlier, True)
    # After dedupe (an image already fitted is served whatever its cost), before anything is stored.
    plan = job_plan(upload.params, upload.width, upload.height, upload.channels, settings)
    too_long = over_time_limit(plan, settings)
    if too_long is not None:
        raise SubmitRefused(422, too_long, problem="time-limit")
    _admit(db, settings, upload, upload_digest, plan.budget)  # early, before anything is stored

    pause_point("api-after-admission")  # tests only: concurrent uploads of one tenant may meet here
    put_content(store, "uploads", upload.data)
    # Until a worker reports, the job's ETA is the admission estimate on the workers alive now.
    eta = round(estimate_fit_seconds(plan, settings, fit_slots(db, settings)), 1)
    job = Job(id=new_job_id(), tenant=upload.tenant, image_id=image_id, status=QUEUED, progress=0.0, step=0,
              steps=plan.total_steps, params=upload.params.model_dump(),
              upload_digest=upload_digest, upload_bytes=len(upload.data), attempts=0, cancel_requested=0,
              created_at=time.time(), sent_at=time.time(), name=upload.name,
              batch_key=plan.batch_key, eta_s=eta)
    # Checked again in the job row's own transaction, under the tenant's lock: concurrent uploads can't all
    # pass the pending-job and quota checks on the same stale counts.
    stored = db.add_job_admitted(job, id_key, fingerprint,
                                 lambda: _admit(db, settings, upload, upload_digest, plan.budget))
    if stored.id != job.id:
        return Submitted(stored, True)
    # Under the upload's lock, which a delete dropping an unused original takes too (service/deletion.py).
    db.under_blob_lock(upload_digest, lambda: _keep_upload(store, upload_digest, upload.data))
    # If this process dies before the message is sent, the job is still safe: it is queued with sent_at set,
    # and a worker's recovery scan sends it once TUNER_RESEND_QUEUED_AFTER_S has passed.
    try:
        send_fit(celery, job.id)
    except Exception:  # noqa: BLE001 - the broker is down: the job can't run; say so and don't keep it queued
        log.warning("could not queue job %s", job.id, exc_info=True)
        db.fail_job(job.id, "the queue was unavailable when the job was submitted")
        raise SubmitRefused(503, "the job queue is unavailable; retry later", {"Retry-After": "10"}) from None
    return Submitted(job, False)


def _admit(db: Database, settings: Settings, upload: Upload, upload_digest: str, blob_budget: int) -> None:
    """Raises SubmitRefused unless the tenant has room: its quota (the blob to come at its planned size, and the
    original as it was sent, kept for TUNER_UPLOAD_RETENTION_S) and its and the service's pending jobs."""
    original = (0 if db.upload_counted(upload.tenant, upload_digest, time.time() - settings.upload_retention_s)
                else len(upload.data))
    check_quota(db, settings, upload.tenant, blob_budget + original)
    if db.count_jobs(ACTIVE, upload.tenant) >= settings.max_pending_jobs_per_tenant:
        raise SubmitRefused(429, f"this tenant has {settings.max_pending_jobs_per_tenant} jobs waiting or running "
                                 "(its limit); retry when some have finished", {"Retry-After": "30"},
                            problem="too-many-jobs")
    if db.count_jobs(ACTIVE) >= settings.max_pending_jobs:
        raise SubmitRefused(429, "too many jobs waiting; retry later", {"Retry-After": "30"}, problem="too-many-jobs")


def _earlier_job(db: Database, idempotency_key: str | None, fingerprint: str, image_id: str) -> Job | None:
    """The job an earlier identical request made: by its Idempotency-Key, its fitted image, or its active job."""
    if idempotency_key:
        found = db.get_idempotency(idempotency_key)
        if found is not None:
            if found.fingerprint != fingerprint:
                raise SubmitRefused(422, "this Idempotency-Key was used with a different request",
                                    problem="idempotency-key-reused")
            job = db.get_job(found.job_id)
            if job is not None:
                return job
    if db.get_image(image_id) is not None:
        done = db.latest_job_for_image(image_id, SUCCEEDED)
        if done is not None:
            return done
    return db.active_job_for_image(image_id)


def _remember(db: Database, id_key: str, fingerprint: str, earlier: Job) -> None:
    """A key first used on a deduplicated request is recorded too, so that reusing it for another image is
    refused like any reuse."""
    if db.remember_idempotency(id_key, fingerprint, earlier.id).fingerprint != fingerprint:
        raise SubmitRefused(422, "this Idempotency-Key was used with a different request",
                            problem="idempotency-key-reused")


def _keep_upload(store: BlobStore, upload_digest: str, data: bytes) -> None:
    """The sweeper (or a delete of another image of the same bytes) may have deleted an old identical upload
    between our put (which only touched it) and the job row that now protects it; we still hold the bytes, so
    put them back before any worker looks."""
    key = f"uploads/{upload_digest}"
    if not store.exists(key):
        log.info("upload %s was swept before its job was saved; storing it again", upload_digest)
        store.put(key, data)


