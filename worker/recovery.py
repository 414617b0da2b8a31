"""The worker's main process's recovery thread: a job whose worker stopped beating, or whose message may
have been lost, is sent again, so no accepted job waits for the broker's long visibility timeout.

The main process is the one that forks the pool's children (at start, and whenever a child is recycled after
TUNER_MAX_TASKS_PER_CHILD tasks), so this thread must never be inside the database when it forks: a child
forked while the thread was in a SQLite call inherits SQLite's process-wide mutexes locked by a thread that
does not exist in the child, and its first query can wait on them forever (a suspect for the issue 24 soak's
worker that took nothing for minutes after a recycle). Each pass therefore runs under FORK_GUARD, which every
fork of this process takes first (os.register_at_fork), and ends with its connections closed, so a child
inherits no open database either (SQLite's rule: no connection carried across fork())."""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery

from service.jobqueue import send_fit, send_tiles
from service.testhooks import pause_point
from worker.context import WorkerContext

log = logging.getLogger("tuner.worker")

# Held by a recovery pass, and by this process's os.fork() from just before to just after the fork: a pool
# child is never forked mid-pass, so it inherits no lock that the pass held (module doc).
FORK_GUARD = threading.Lock()
_guarded = False


def guard_forks() -> None:
    """Makes every later os.fork() of this process (billiard's pool children) wait for the recovery pass under
    way, if any. Once per process; a fork from a thread that holds FORK_GUARD would deadlock, and none does."""
    global _guarded
    if not _guarded:
        os.register_at_fork(before=FORK_GUARD.acquire, after_in_parent=FORK_GUARD.release,
                            after_in_child=FORK_GUARD.release)
        _guarded = True


class BrokerRestarts:
    """Tells when the Redis broker has restarted (its `run_id` changed). Without persistence a restarted Redis
    has lost every queued message, so the jobs they were for are sent again at once rather than after
    TUNER_RESEND_QUEUED_AFTER_S. Other brokers: never (the periodic re-send covers them)."""

    def __init__(self, url: str) -> None:
        self.url = url if url.startswith(("redis://", "rediss://")) else None
        self._client = None
        self._last: str | None = None

    def restarted(self) -> bool:
        if self.url is None:
            return False
        try:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
            run_id = str(self._client.info("server")["run_id"])
        except Exception:  # noqa: BLE001 - down (or restarting): nothing to tell until it answers
            return False
        changed = self._last is not None and run_id != self._last
        self._last = run_id
        return changed


class Recovery(threading.Thread):
    """Runs in the worker's main process: puts running jobs (and tiles of jobs fitted as tiles) whose worker
    stopped beating (SIGKILL, lost machine) back on the queue, so they don't wait for the broker's long
    visibility timeout; and sends again queued jobs and tiles whose message may have been lost, so no
    accepted job waits forever."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True, name="tuner-recovery")
        self.app = app
        self.ctx: WorkerContext = app.tuner  # type: ignore[attr-defined]
        self.stopped = threading.Event()
        self.broker = BrokerRestarts(self.ctx.settings.resolved_broker_url)

    def scan(self) -> list[str]:
        settings = self.ctx.settings
        stale = self.ctx.db.requeue_stale(settings.stale_after_s)
        for job_id in stale:
            log.warning("job %s: worker stopped beating; sending it again", job_id)
        restarted = self.broker.restarted()
        self._scan_tiles(0.0 if restarted else settings.resend_queued_after_s)
        assemblies = self.ctx.db.requeue_assemblies(settings.stale_after_s)
        for job_id in assemblies:
            log.warning("job %s: its tiles are fitted but its blob was not assembled; sending it again", job_id)
        stale = stale + assemblies
        if restarted:
            # Every queued job's message may be gone, even one sent a moment before the restart. One sent to
            # the new server since gets a duplicate, which is harmless (the claim runs a job once).
            lost = self.ctx.db.resend_due(0.0)
            log.warning("the broker restarted: sending %d queued jobs again", len(lost))
            stale = stale + lost
        waiting = self.ctx.db.resend_due(settings.resend_queued_after_s)
        for job_id in waiting:
            log.warning("job %s: still queued %.0f s after its last send; sending it again", job_id,
                        settings.resend_queued_after_s)
        for job_id in stale + waiting:
            try:
                send_fit(self.app, job_id)
            except Exception:  # noqa: BLE001 - the job stays queued, stamped as sent; a later scan retries it
                log.exception("could not send job %s; retrying in %.0f s", job_id,
                              settings.resend_queued_after_s)
        return stale + waiting

    def _scan_tiles(self, resend_after: float) -> None:
        """Tiles whose worker stopped beating, or whose message may be lost, are sent again, each alone."""
        due = self.ctx.db.requeue_tiles(self.ctx.settings.stale_after_s, resend_after)
        by_job: dict[str, list[int]] = {}
        for job_id, tile in due:
            log.warning("job %s: tile %d's worker stopped beating or its message is old; sending it again", job_id,
                        tile)
            by_job.setdefault(job_id, []).append(tile)
        for job_id, tiles in by_job.items():
            try:
                send_tiles(self.app, job_id, tiles)
            except Exception:  # noqa: BLE001 - stamped as sent: a later scan retries them
                log.exception("could not send tiles %s of job %s", tiles, job_id)

    def run(self) -> None:
        guard_forks()
        name = f"{socket.gethostname()}:{os.getpid()}"
        while not self.stopped.is_set():
            with FORK_GUARD:  # no fork of the pool's children while this pass is in the database (module doc)
                try:
                    self.ctx.db.worker_beat(name)  # readiness: a worker is here (TUNER_READY_NEEDS_WORKER)
                    pause_point("worker-recovery-pass")  # tests only: a pool child's fork must wait for the pass
                    self.scan()
                except Exception:  # noqa: BLE001 - a failed scan is retried on the next interval
                    log.exception("recovery scan failed")
                finally:
                    self._close_connections()
            self.stopped.wait(self.ctx.settings.recovery_interval_s)

    def _close_connections(self) -> None:
        """Closes the pass's pooled database connections, so no fork copies an open one (module doc)."""
        try:
            self.ctx.db.engine.dispose()
        except Exception:  # noqa: BLE001 - the database is down: nothing open to close; the next pass retries
            log.debug("closing the recovery pass's connections failed", exc_info=True)
