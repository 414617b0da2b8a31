"""Queries and state transitions of jobs. Every transition is a conditional UPDATE, so concurrent API
processes, workers and recovery scans cannot both win."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from service.records.engine import Records
from service.records.states import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, STATES, ClaimOutcome, HeartbeatState
from service.records.tables import IdempotencyKey, Job


class JobRecords(Records):
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

    def remember_idempotency(self, key: str, fingerprint: str, job_id: str) -> IdempotencyKey:
        """Records a key first used on a request that was answered with an earlier job (deduplicated), so
        that reusing it for another request is refused like any other; keeps the first record if there is one."""
        try:
            with self.session() as s:
                s.add(IdempotencyKey(key=key, fingerprint=fingerprint, job_id=job_id, created_at=time.time()))
        except IntegrityError:
            pass
        found = self.get_idempotency(key)
        assert found is not None
        return found

    def count_jobs(self, statuses: tuple[str, ...], tenant: str | None = None) -> int:
        query = select(func.count()).select_from(Job).where(Job.status.in_(statuses))
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        with self.session() as s:
            return s.scalar(query) or 0

    def jobs_by_state(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts = dict.fromkeys(STATES, 0)
        counts.update({k: v for k, v in rows})
        return counts

    def list_jobs(self, tenant: str, statuses: tuple[str, ...], limit: int) -> list[Job]:
        """A tenant's jobs in these states, newest first (the tenant and status indexes)."""
        with self.session() as s:
            return list(s.scalars(select(Job).where(Job.tenant == tenant, Job.status.in_(statuses))
                                  .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)))

    def active_counts(self) -> dict[str, int]:
        """Queued and running jobs (a few rows, found by the status index)."""
        with self.session() as s:
            rows = s.execute(select(Job.status, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.status)).all()
        counts = dict.fromkeys(ACTIVE, 0)
        counts.update({k: v for k, v in rows})
        return counts

    def finished_since(self, after: float, limit: int = 5000) -> list[tuple[str, str, float, float | None]]:
        """(id, status, finished_at, fit_seconds) of the jobs that finished after `after`, oldest first, at most
        `limit` (the finished_at index: a metrics scrape reads what finished since the last, not every job)."""
        with self.session() as s:
            return [tuple(r) for r in s.execute(
                select(Job.id, Job.status, Job.finished_at, Job.fit_seconds)
                .where(Job.finished_at > after, Job.status.not_in(ACTIVE))
                .order_by(Job.finished_at, Job.id).limit(limit)).all()]

    def fit_seconds(self) -> list[float]:
        with self.session() as s:
            return [v for (v,) in s.execute(select(Job.fit_seconds).where(Job.fit_seconds.is_not(None)))]

    def request_cancel(self, job_id: str) -> Job | None:
        """Queued jobs are cancelled at once, and so are jobs fitted as tiles (each tile's task reads it at its
        next beat, and a tile still queued is not claimed); other running ones get a flag their fit loop
        polls."""
        now = time.time()
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id, (Job.status == QUEUED) | ((Job.status == RUNNING)
                                                                                    & Job.tiles.is_not(None)))
                      .values(status=CANCELLED, cancel_requested=1, finished_at=now, error="cancelled", eta_s=None))
            s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING).values(cancel_requested=1))
            return s.get(Job, job_id)

    def claim_job(self, job_id: str, worker: str, stale_after: float,
                  max_attempts: int) -> tuple[ClaimOutcome, Job | None]:
        """Atomically take a job for running: a queued one, or a running one whose worker stopped beating.
        Returns (the outcome, the job)."""
        now = time.time()
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return ClaimOutcome.MISSING, None
            if job.status not in ACTIVE:
                return ClaimOutcome.DONE, job
            if job.status == RUNNING and (job.heartbeat_at or 0) >= now - stale_after:
                return ClaimOutcome.BUSY, job  # a live worker has it (a duplicate delivery)
            if job.attempts >= max_attempts:
                s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(
                    status=FAILED, finished_at=now,
                    error=f"the fit was interrupted {job.attempts} times (worker lost); giving up"))
                return ClaimOutcome.EXHAUSTED, s.get(Job, job_id)
            res = s.execute(update(Job).where(
                Job.id == job_id,
                (Job.status == QUEUED) | ((Job.status == RUNNING) & (Job.heartbeat_at < now - stale_after)),
            ).values(status=RUNNING, worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
                     started_at=now, progress=0.0, step=0, eta_s=None))
            if res.rowcount != 1:
                return ClaimOutcome.BUSY, job
            return ClaimOutcome.CLAIMED, s.get(Job, job_id)

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

    def heartbeat(self, job_id: str, worker: str, **values: Any) -> HeartbeatState:
        """Record liveness (and progress). Returns what the worker should do (HeartbeatState)."""
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == RUNNING)
                            .values(heartbeat_at=time.time(), **values))
            if res.rowcount != 1:
                return HeartbeatState.LOST
            flag = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return HeartbeatState.CANCEL if flag else HeartbeatState.OK

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
        """Running jobs whose worker stopped beating (killed, machine lost) go back to queued (not those fitted
        as tiles: records/tiles.py); returns their ids so the caller sends each one again. The conditional
        update makes concurrent scanners harmless."""
        cutoff = time.time() - stale_after
        with self.session() as s:
            # A job fitted as tiles is its tiles' to recover (records/tiles.py), not its own task's.
            ids = list(s.scalars(select(Job.id).where(Job.status == RUNNING, Job.heartbeat_at < cutoff,
                                                      Job.tiles.is_(None))))
            done = []
            for job_id in ids:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING,
                                                  Job.heartbeat_at < cutoff)
                                .values(status=QUEUED, worker=None, heartbeat_at=None, sent_at=time.time(),
                                        eta_s=None))
                if res.rowcount == 1:
                    done.append(job_id)
        return done
