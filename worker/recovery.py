"""The worker's main process's recovery thread: a job whose worker stopped beating, or whose message may
have been lost, is sent again, so no accepted job waits for the broker's long visibility timeout."""

from __future__ import annotations

import logging
import threading

from celery import Celery

from service.jobqueue import send_fit
from worker.context import WorkerContext

log = logging.getLogger("tuner.worker")


class Recovery(threading.Thread):
    """Runs in the worker's main process: puts running jobs whose worker stopped beating (SIGKILL, lost
    machine) back on the queue, so they don't wait for the broker's long visibility timeout; and sends
    again queued jobs whose message may have been lost, so no accepted job waits forever."""

    def __init__(self, app: Celery) -> None:
        super().__init__(daemon=True, name="tuner-recovery")
        self.app = app
        self.ctx: WorkerContext = app.tuner  # type: ignore[attr-defined]
        self.stopped = threading.Event()

    def scan(self) -> list[str]:
        settings = self.ctx.settings
        stale = self.ctx.db.requeue_stale(settings.stale_after_s)
        for job_id in stale:
            log.warning("job %s: worker stopped beating; sending it again", job_id)
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
        while not self.stopped.is_set():
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a failed scan is retried on the next interval
                log.exception("recovery scan failed")
            self.stopped.wait(self.ctx.settings.recovery_interval_s)
