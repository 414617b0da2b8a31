"""Durable job and image records (SQLAlchemy; SQLite under the data dir by default). Redis is only the
broker: these rows are the truth about every accepted job and every finished image."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
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
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    fit_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Jobs with the same key can share one batched fit: the image's width x height x channels and the
    # canonical fit parameters, set by the API at submission (None: never batched, e.g. older rows).
    batch_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    # How many jobs shared the fit that made this job's blob (1: fitted alone); set when it succeeds.
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Seconds the running fit still needs, estimated by its worker's heartbeat from the time since the fit
    # started and its progress (None until it can tell); 0 once succeeded.
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
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


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


# Columns added after the first release: (table, column, SQL type, index name or None). `ensure_schema`
# adds any that an older database lacks (and its index), so existing data dirs keep working.
_ADDED_COLUMNS = (
    ("jobs", "sent_at", "DOUBLE PRECISION", None),
    ("jobs", "batch_key", "VARCHAR(200)", "ix_jobs_batch_key"),
    ("jobs", "batch_size", "INTEGER", None),
    ("jobs", "eta_s", "DOUBLE PRECISION", None),
)
_SCHEMA_LOCK = 0x7475_6E65  # a PostgreSQL advisory lock id: serialises schema setup between processes


def ensure_schema(conn: Connection) -> None:
    """Creates missing tables and adds missing columns. On PostgreSQL several API and worker processes may
    start at once; an advisory lock in the (transactional) DDL's transaction lets one at a time do this."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
    Base.metadata.create_all(conn)
    for table, column, sql_type, index in _ADDED_COLUMNS:
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        if column not in present:
            try:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            except (OperationalError, ProgrammingError) as e:  # another process added it meanwhile (SQLite)
                if "duplicate column" not in str(e).lower():
                    raise
        if index is not None:  # create_all made it on a fresh table; an upgraded one needs it too
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column})"))


class Database:
    """Engine and sessions, created per process: a forked Celery child must not reuse its parent's
    connections (SQLite file handles, PostgreSQL sockets)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                # In a forked child: forget the parent's pooled connections without closing them, which
                # would end the parent's PostgreSQL sessions.
                self._engine.dispose(close=False)
            kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if self.url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            engine = create_engine(self.url, **kwargs)
            if self.url.startswith("sqlite"):
                event.listen(engine, "connect", _sqlite_pragmas)
            with _sqlite_schema_lock(engine), engine.begin() as conn:
                ensure_schema(conn)
            self._engine, self._pid = engine, os.getpid()
            self._sessions = sessionmaker(engine, expire_on_commit=False)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.engine  # noqa: B018 - (re)creates the engine in a new process
        assert self._sessions is not None
        with self._sessions() as s, s.begin():
            yield s

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1))

    # Jobs ------------------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def active_job_for_image(self, image_id: str) -> Job | None:
        with self.session() as s:
            return s.scalars(select(Job).where(Job.image_id == image_id, Job.status.in_(ACTIVE))
                             .order_by(Job.created_at.desc())).first()

    def latest_job_for_image(self, image_id: str, status: str) -> Job | None:
        with self.session() as s:
            return s.scalars(select(Job).where(Job.image_id == image_id, Job.status == status)
                             .order_by(Job.created_at.desc())).first()

    def add_job(self, job: Job, idempotency_key: str | None = None, fingerprint: str | None = None) -> Job:
        """Insert a job (and its idempotency key). When the key was stored meanwhile by a concurrent
        request, that request's job is returned instead."""
        try:
            with self.session() as s:
                s.add(job)
                if idempotency_key:
                    s.add(IdempotencyKey(key=idempotency_key, fingerprint=fingerprint or "", job_id=job.id,
                                         created_at=time.time()))
        except IntegrityError:
            found = self.get_idempotency(idempotency_key or "")
            if found is None:
                raise
            existing = self.get_job(found.job_id)
            assert existing is not None
            return existing
        return job

    def get_idempotency(self, key: str) -> IdempotencyKey | None:
        with self.session() as s:
            return s.get(IdempotencyKey, key)

    def count_jobs(self, statuses: tuple[str, ...]) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(statuses))) or 0

    def jobs_by_state(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts = dict.fromkeys(STATES, 0)
        counts.update({k: v for k, v in rows})
        return counts

    def fit_seconds(self) -> list[float]:
        with self.session() as s:
            return [v for (v,) in s.execute(select(Job.fit_seconds).where(Job.fit_seconds.is_not(None)))]

    def request_cancel(self, job_id: str) -> Job | None:
        """Queued jobs are cancelled at once; running ones get a flag their fit loop polls."""
        now = time.time()
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED)
                      .values(status=CANCELLED, cancel_requested=1, finished_at=now, error="cancelled"))
            s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING).values(cancel_requested=1))
            return s.get(Job, job_id)

    def claim_job(self, job_id: str, worker: str, stale_after: float, max_attempts: int) -> tuple[str, Job | None]:
        """Atomically take a job for running: a queued one, or a running one whose worker stopped beating.
        Returns ("claimed" | "busy" | "done" | "exhausted" | "missing", job)."""
        now = time.time()
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return "missing", None
            if job.status not in ACTIVE:
                return "done", job
            if job.status == RUNNING and (job.heartbeat_at or 0) >= now - stale_after:
                return "busy", job  # a live worker has it (a duplicate delivery)
            if job.attempts >= max_attempts:
                s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(
                    status=FAILED, finished_at=now,
                    error=f"the fit was interrupted {job.attempts} times (worker lost); giving up"))
                return "exhausted", s.get(Job, job_id)
            res = s.execute(update(Job).where(
                Job.id == job_id,
                (Job.status == QUEUED) | ((Job.status == RUNNING) & (Job.heartbeat_at < now - stale_after)),
            ).values(status=RUNNING, worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
                     started_at=now, progress=0.0, step=0, eta_s=None))
            if res.rowcount != 1:
                return "busy", job
            return "claimed", s.get(Job, job_id)

    def claim_batch(self, batch_key: str, worker: str, limit: int, max_attempts: int) -> list[Job]:
        """Takes up to `limit` queued jobs with this batch key, oldest first, for `worker`, which has already
        claimed one of them and fits them together. Each is taken with claim_job's conditional UPDATE in its
        own transaction, so a job another worker claims meanwhile is skipped, never shared, and no lock is
        held across rows. Jobs near their attempt limit are left to their own message (claim_job fails them)."""
        claimed: list[Job] = []
        tried: set[str] = set()
        while len(claimed) < limit:
            with self.session() as s:
                query = select(Job.id).where(Job.batch_key == batch_key, Job.status == QUEUED,
                                             Job.attempts < max_attempts)
                if tried:
                    query = query.where(Job.id.not_in(tried))
                ids = list(s.scalars(query.order_by(Job.created_at).limit(limit - len(claimed))))
            if not ids:
                break
            for job_id in ids:
                tried.add(job_id)
                job = self._claim_queued(job_id, worker, max_attempts)
                if job is not None:
                    claimed.append(job)
        return claimed

    def _claim_queued(self, job_id: str, worker: str, max_attempts: int) -> Job | None:
        now = time.time()
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED, Job.attempts < max_attempts)
                            .values(status=RUNNING, worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
                                    started_at=now, progress=0.0, step=0, eta_s=None))
            return s.get(Job, job_id) if res.rowcount == 1 else None

    def active_upload_digests(self) -> set[str]:
        """The uploads that queued or running jobs still need (the sweeper keeps these whatever their age)."""
        with self.session() as s:
            return set(s.scalars(select(Job.upload_digest).where(Job.status.in_(ACTIVE)).distinct()))

    def resend_due(self, older_than: float, limit: int = 500) -> list[str]:
        """Queued jobs whose message was last sent more than `older_than` seconds ago: the message may be
        lost (a broker restarted without persistence, an API that died between saving the job and sending
        it). Each is stamped sent now by a conditional update, so of several scanning workers exactly one
        re-sends it, and each waiting job is re-sent at most once per `older_than`. A duplicate message is
        harmless: the claim runs a job once."""
        now = time.time()
        cutoff = now - older_than
        last_sent = func.coalesce(Job.sent_at, Job.created_at)  # rows from before the column existed
        with self.session() as s:
            ids = list(s.scalars(select(Job.id).where(Job.status == QUEUED, last_sent < cutoff)
                                 .order_by(Job.created_at).limit(limit)))
            due = []
            for job_id in ids:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED, last_sent < cutoff)
                                .values(sent_at=now))
                if res.rowcount == 1:
                    due.append(job_id)
        return due

    def heartbeat(self, job_id: str, worker: str, **values: Any) -> str:
        """Record liveness (and progress). Returns "ok", "cancel" (a cancel was requested) or "lost" (the
        job is no longer this worker's: it was re-queued as stale or finished elsewhere)."""
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == RUNNING)
                            .values(heartbeat_at=time.time(), **values))
            if res.rowcount != 1:
                return "lost"
            flag = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return "cancel" if flag else "ok"

    def finish_job(self, job_id: str, worker: str, status: str, **values: Any) -> bool:
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == RUNNING)
                            .values(status=status, finished_at=time.time(), **values))
            return res.rowcount == 1

    def fail_job(self, job_id: str, error: str) -> None:
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                      .values(status=FAILED, finished_at=time.time(), error=error))

    def requeue_stale(self, stale_after: float) -> list[str]:
        """Running jobs whose worker stopped beating (killed, machine lost) go back to queued; returns their
        ids so the caller sends each one again. The conditional update makes concurrent scanners harmless."""
        cutoff = time.time() - stale_after
        with self.session() as s:
            ids = list(s.scalars(select(Job.id).where(Job.status == RUNNING, Job.heartbeat_at < cutoff)))
            done = []
            for job_id in ids:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING,
                                                  Job.heartbeat_at < cutoff)
                                .values(status=QUEUED, worker=None, heartbeat_at=None, sent_at=time.time(),
                                        eta_s=None))
                if res.rowcount == 1:
                    done.append(job_id)
        return done

    # Images ----------------------------------------------------------------------------------------------
    def get_image(self, image_id: str) -> Image | None:
        with self.session() as s:
            return s.get(Image, image_id)

    def add_image(self, image: Image) -> Image:
        """Insert unless present (a re-run or a second upload of the same blob keeps the first record)."""
        try:
            with self.session() as s:
                s.add(image)
        except IntegrityError:
            existing = self.get_image(image.id)
            assert existing is not None
            return existing
        return image

    def delete_image(self, image_id: str) -> Image | None:
        with self.session() as s:
            img = s.get(Image, image_id)
            if img is not None:
                s.delete(img)
            return img

    def blob_in_use(self, blob_digest: str) -> bool:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Image).where(Image.blob_digest == blob_digest)) > 0


@contextmanager
def _sqlite_schema_lock(engine: Engine) -> Iterator[None]:
    """SQLite's counterpart of the PostgreSQL advisory lock: an API and workers opening a fresh database
    together would otherwise collide in create_all (a read transaction upgraded to a write one fails with
    "database is locked" at once, without waiting for the busy timeout). A lock file beside the database
    lets one process at a time set the schema up."""
    path = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    with open(f"{path}.schema-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes progress; the busy timeout waits out short locks (set
    # first, so that the switch to WAL waits too).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
