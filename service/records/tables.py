"""The record tables: jobs, images and idempotency keys (SQLAlchemy declarative models)."""

from __future__ import annotations

import uuid

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.records.states import QUEUED

# The tenant of everything made without an API key (a service with no keys: `tuner serve` on 127.0.0.1, and
# every row from before tenants existed).
LOCAL_TENANT = "local"


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True, default=LOCAL_TENANT)
    image_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    psnr: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    upload_digest: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    # When the job's message was last sent to the broker (set when the job is accepted, just before the
    # first send). A queued job whose last send is old may have lost its message; it is sent again.
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)  # /metrics reads by it
    fit_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Jobs with the same key can share one batched fit: the image's width x height x channels and the
    # canonical fit parameters, set by the API at submission (None: never batched, e.g. older rows).
    batch_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    # How many jobs shared the fit that made this job's blob (1: fitted alone); set when it succeeds.
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Seconds the running fit still needs, estimated by its worker's heartbeat from the time since the fit
    # started and its progress (None until it can tell); 0 once succeeded.
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The upload's size: the tenant's quota counts it while the original is kept (None: rows from before).
    upload_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The name the upload came with (its file's name), for people; None when it had none.
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # When the job's image was deleted (the job's links then lead nowhere, and its original is not kept).
    image_deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # How many tiles the job's image is fitted as, one task each (service/records/tiles.py); None: one fit.
    tiles: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobTile(Base):
    """One tile of a job fitted as tiles (issue 28): its own task's claim, liveness and progress, and where its
    fitted payload is stored once done. The job row stays the user's one job; these rows say which tiles
    are done, so a lost worker's tile is fitted again alone."""

    __tablename__ = "job_tiles"
    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tile: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    # The tile's share of the blob's bytes, allocated when the job fans out (tuner_model/rate/allocate.py).
    budget: Mapped[int | None] = mapped_column(Integer, nullable=True)
    psnr: Mapped[float | None] = mapped_column(Float, nullable=True)
    bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True, default=LOCAL_TENANT)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    bpp: Mapped[float] = mapped_column(Float)
    psnr: Mapped[float | None] = mapped_column(Float, nullable=True)
    parameters: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    blob_digest: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # "fit" or "upload"
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    # JPEG, WebP and AVIF files of the upload at no more bytes than the blob, made by the worker:
    # {codec: {quality, bytes, psnr}} (service/comparisons.py); None for blobs uploaded as they are.
    comparisons: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the upload's (its job's) name


class BlobLock(Base):
    """One row per content-addressed blob digest that an image references or did: the row a writer and a
    deleter of that blob both lock (an upsert) before they look at the images referencing it, so "no image
    references this blob, delete it" and "reference it, make sure it is stored" never interleave
    (service/records/images.py)."""

    __tablename__ = "blob_locks"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    locked_at: Mapped[float] = mapped_column(Float)


class WorkerBeat(Base):
    """A worker main process's last sign of life (service/records/workers.py)."""

    __tablename__ = "worker_beats"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    beat_at: Mapped[float] = mapped_column(Float)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    # The client's key scoped to its tenant (service/submit.py: a hash of both), so tenants can't collide.
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored (the key is 32 random bytes, so a fast hash is enough; a slow
    password hash guards guessable secrets). `id` is public and names the key in lists and logs."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex
