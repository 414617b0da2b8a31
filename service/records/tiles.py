"""Queries and state transitions of a job fitted as tiles (issue 28), one task per tile. The job row stays the
user's one job (its status, its progress: the mean of its tiles', its ETA); a `job_tiles` row per tile holds
that tile's claim, liveness and progress. Every transition is a conditional UPDATE, as for jobs: a tile is
fitted by one worker at a time, a lost worker's tile alone goes back to the queue, and exactly one worker
finds the last tile done and assembles the blob."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update

from service.records.engine import Records
from service.records.states import FAILED, QUEUED, RUNNING, SUCCEEDED, ClaimOutcome, HeartbeatState
from service.records.tables import Job, JobTile
from tuner_model.core.progress import seconds_left


class TileRecords(Records):
    def fan_out(self, job_id: str, worker: str, budgets: list[int], stale_after: float) -> list[int] | None:
        """Marks `worker`'s running job as fitted in as many tiles as `budgets` (each tile's bytes) and makes
        their rows (those missing: a second run keeps the first's); returns the tiles to send now: those
        queued, and those whose worker stopped beating, put back to queued. A tile under way or done is left
        alone. None when the job is no longer this worker's."""
        now = time.time()
        with self.session() as s:
            count = len(budgets)
            res = s.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == RUNNING)
                            .values(tiles=count, heartbeat_at=now))
            if res.rowcount != 1:
                return None
            have = set(s.scalars(select(JobTile.tile).where(JobTile.job_id == job_id)))
            for k in range(count):
                if k not in have:
                    s.add(JobTile(job_id=job_id, tile=k, status=QUEUED, attempts=0, progress=0.0, step=0,
                                  sent_at=now, budget=budgets[k]))
            s.flush()
            s.execute(update(JobTile).where(JobTile.job_id == job_id, JobTile.status == RUNNING,
                                            JobTile.heartbeat_at < now - stale_after)
                      .values(status=QUEUED, worker=None))
            todo = list(s.scalars(select(JobTile.tile).where(JobTile.job_id == job_id, JobTile.status == QUEUED)
                                  .order_by(JobTile.tile)))
            s.execute(update(JobTile).where(JobTile.job_id == job_id, JobTile.status == QUEUED).values(sent_at=now))
            return todo

    def running_tiled_jobs(self) -> set[str]:
        """The jobs fitted as tiles that are still running (whose stored tiles are still needed)."""
        with self.session() as s:
            return set(s.scalars(select(Job.id).where(Job.status == RUNNING, Job.tiles.is_not(None))))

    def get_tiles(self, job_id: str) -> list[JobTile]:
        with self.session() as s:
            return list(s.scalars(select(JobTile).where(JobTile.job_id == job_id).order_by(JobTile.tile)))

    def claim_tile(self, job_id: str, tile: int, worker: str, stale_after: float,
                   max_attempts: int) -> ClaimOutcome:
        """Takes tile `tile` of a running job for `worker`: a queued tile, or one whose worker stopped beating.
        A job that is cancelled, finished or gone has nothing to claim (DONE, MISSING); a tile interrupted
        `max_attempts` times fails its job (EXHAUSTED)."""
        now = time.time()
        with self.session() as s:
            job, row = s.get(Job, job_id), s.get(JobTile, (job_id, tile))
            if job is None or row is None:
                return ClaimOutcome.MISSING
            if job.status != RUNNING or job.cancel_requested or row.status == SUCCEEDED:
                return ClaimOutcome.DONE
            if row.status == RUNNING and (row.heartbeat_at or 0) >= now - stale_after:
                return ClaimOutcome.BUSY
            if row.attempts >= max_attempts:
                s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING).values(
                    status=FAILED, finished_at=now, eta_s=None,
                    error=f"tile {tile} was interrupted {row.attempts} times (worker lost); giving up"))
                return ClaimOutcome.EXHAUSTED
            res = s.execute(update(JobTile).where(
                JobTile.job_id == job_id, JobTile.tile == tile,
                (JobTile.status == QUEUED) | ((JobTile.status == RUNNING) & (JobTile.heartbeat_at < now - stale_after)),
            ).values(status=RUNNING, worker=worker, heartbeat_at=now, attempts=JobTile.attempts + 1, started_at=now,
                     progress=0.0, step=0))
            return ClaimOutcome.CLAIMED if res.rowcount == 1 else ClaimOutcome.BUSY

    def tile_heartbeat(self, job_id: str, tile: int, worker: str, **values: Any) -> HeartbeatState:
        """Records a tile's liveness and progress, and its job's: the job's progress is the mean of its tiles'
        (a finished tile counts 1), its step the sum, its ETA from the time since the job started. LOST when
        the tile is no longer this worker's, CANCEL when its job was cancelled or has ended."""
        now = time.time()
        with self.session() as s:
            res = s.execute(update(JobTile).where(JobTile.job_id == job_id, JobTile.tile == tile,
                                                  JobTile.worker == worker, JobTile.status == RUNNING)
                            .values(heartbeat_at=now, **values))
            if res.rowcount != 1:
                return HeartbeatState.LOST
            job = s.get(Job, job_id)
            if job is None or job.status != RUNNING or job.cancel_requested:
                return HeartbeatState.CANCEL
            self._aggregate(s, job, now)
        return HeartbeatState.OK

    @staticmethod
    def _aggregate(s: Any, job: Job, now: float) -> None:
        rows = s.execute(select(JobTile.status, JobTile.progress, JobTile.step).where(JobTile.job_id == job.id)).all()
        count = max(1, job.tiles or len(rows))
        frac = min(0.99, sum(1.0 if st == SUCCEEDED else p for st, p, _ in rows) / count)
        left = seconds_left(now - (job.started_at or now), frac)
        s.execute(update(Job).where(Job.id == job.id, Job.status == RUNNING).values(
            heartbeat_at=now, progress=max(job.progress or 0.0, frac), step=sum(step for _, _, step in rows),
            eta_s=None if left is None else round(left, 1)))

    def finish_tile(self, job_id: str, tile: int, worker: str, **values: Any) -> int | None:
        """Records `worker`'s tile as fitted; returns how many of the job's tiles are not (0: this worker
        fitted the last one and assembles the blob), or None when the tile was not this worker's any more or
        the job has ended. Serialised on the job's row, so of two tiles finishing at once exactly one sees 0."""
        now = time.time()
        with self.session() as s:
            job = s.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
            if job is None or job.status != RUNNING or job.cancel_requested:
                return None
            res = s.execute(update(JobTile).where(JobTile.job_id == job_id, JobTile.tile == tile,
                                                  JobTile.worker == worker, JobTile.status == RUNNING)
                            .values(status=SUCCEEDED, progress=1.0, finished_at=now, heartbeat_at=now, **values))
            if res.rowcount != 1:
                return None
            left = s.scalar(select(func.count()).select_from(JobTile).where(JobTile.job_id == job_id,
                                                                             JobTile.status != SUCCEEDED))
            self._aggregate(s, job, now)
            return int(left or 0)

    def beat_tiled_job(self, job_id: str) -> bool:
        """The job's liveness while its blob is assembled (no tile is running then); False once it has ended."""
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING, Job.cancel_requested == 0)
                            .values(heartbeat_at=time.time()))
            return res.rowcount == 1

    def finish_tiled_job(self, job_id: str, status: str, **values: Any) -> bool:
        """Settles a tiled job (any worker of its tiles may: none owns the job row while they run)."""
        with self.session() as s:
            res = s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING)
                            .values(status=status, finished_at=time.time(), **values))
            return res.rowcount == 1

    def requeue_tiles(self, stale_after: float, resend_after: float, limit: int = 500) -> list[tuple[str, int]]:
        """The recovery scan's share of tiles: a running tile whose worker stopped beating goes back to queued,
        and a queued one whose message was last sent more than `resend_after` ago is stamped sent now; both
        are returned to be sent again (each by one scanner: conditional updates)."""
        now = time.time()
        with self.session() as s:
            live = select(Job.id).where(Job.status == RUNNING, Job.cancel_requested == 0)
            rows = s.execute(select(JobTile.job_id, JobTile.tile, JobTile.status).where(
                JobTile.job_id.in_(live),
                ((JobTile.status == RUNNING) & (JobTile.heartbeat_at < now - stale_after))
                | ((JobTile.status == QUEUED) & (func.coalesce(JobTile.sent_at, 0.0) < now - resend_after)))
                .limit(limit)).all()
            due = []
            for job_id, tile, status in rows:
                cond = (JobTile.heartbeat_at < now - stale_after) if status == RUNNING else \
                    (func.coalesce(JobTile.sent_at, 0.0) < now - resend_after)
                res = s.execute(update(JobTile).where(JobTile.job_id == job_id, JobTile.tile == tile,
                                                      JobTile.status == status, cond)
                                .values(status=QUEUED, worker=None, sent_at=now))
                if res.rowcount == 1:
                    due.append((job_id, tile))
        return due

    def requeue_assemblies(self, stale_after: float) -> list[str]:
        """Tiled jobs whose tiles are all fitted but whose blob was never assembled (the worker that fitted the
        last tile died): back to queued, to be sent again; the job's own task then assembles it."""
        now = time.time()
        with self.session() as s:
            unfinished = select(JobTile.job_id).where(JobTile.status != SUCCEEDED)
            ids = list(s.scalars(select(Job.id).where(Job.status == RUNNING, Job.tiles.is_not(None),
                                                      Job.heartbeat_at < now - stale_after,
                                                      Job.id.not_in(unfinished))))
            done = []
            for job_id in ids:
                res = s.execute(update(Job).where(Job.id == job_id, Job.status == RUNNING,
                                                  Job.heartbeat_at < now - stale_after)
                                .values(status=QUEUED, worker=None, heartbeat_at=None, sent_at=now, eta_s=None))
                if res.rowcount == 1:
                    done.append(job_id)
        return done


__all__ = ["TileRecords"]
