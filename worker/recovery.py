"""The worker's main process's recovery thread: a job whose worker stopped beating, or whose message may
have been lost, is sent again, so no accepted job waits for the broker's long visibility timeout."""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery import Celery

from service.jobqueue import send_fit
from worker.context import WorkerContext

log = logging.getLogger("tuner.worker")


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
    """Runs in the worker's main process: puts running jobs whose worker stopped beating (SIGKILL, lost
    machine) back on the queue, so they don't wait for the broker's long visibility timeout; and sends
    again queued jobs whose message may have been lost, so no accepted job waits forever."""

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
        if self.broker.restarted():
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

    def run(self) -> None:
        name = f"{socket.gethostname()}:{os.getpid()}"
        while not self.stopped.is_set():
            try:
                self.ctx.db.worker_beat(name)  # readiness: a worker is here (TUNER_READY_NEEDS_WORKER)
                self.scan()
            except Exception:  # noqa: BLE001 - a failed scan is retried on the next interval
                log.exception("recovery scan failed")
            self.stopped.wait(self.ctx.settings.recovery_interval_s)
