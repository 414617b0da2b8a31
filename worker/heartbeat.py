"""A fit's link to its job rows while it runs: one thread per task writes liveness, progress and the ETA of
every job the task holds, and reads back whether each was cancelled or taken away; the fit loop only polls
flags (no database per step)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from service.records import HeartbeatState
from tuner_model.core.progress import seconds_left  # no torch: the parent process may import it
from worker.context import WorkerContext

log = logging.getLogger("tuner.worker")


def eta_seconds(elapsed: float, frac: float) -> float | None:
    """A job's `eta_s`: tuner_model.core.progress.seconds_left to a tenth of a second."""
    left = seconds_left(elapsed, frac)
    return None if left is None else round(left, 1)


class Heartbeat(threading.Thread):
    """Writes liveness, the latest progress and the ETA of each job a task holds to its row every few
    seconds (and at once when a fit starts), and reads back whether each was cancelled or taken away: the
    fit loop only polls the resulting flags (no database per step). One thread serves every job of a batch."""

    def __init__(self, ctx: WorkerContext, job_ids: list[str], worker: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_ids[0]}")
        self.ctx, self.worker = ctx, worker
        self._jobs = list(job_ids)  # those still held: a settled job is released
        self._values: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, JobProgress] = {}  # the fits under way, whose ETA each beat writes
        self._reasons: dict[str, str] = {}  # job id -> "cancel" or "lost"
        self._done = threading.Event()
        self._wake = threading.Event()  # beat now rather than at the end of the interval
        self._lock = threading.Lock()

    def report(self, job_id: str, *, now: bool = False, **values: Any) -> None:
        with self._lock:
            self._values.setdefault(job_id, {}).update(values)
        if now:
            self._wake.set()

    def track(self, progress: JobProgress) -> None:
        with self._lock:
            self._progress[progress.job_id] = progress

    def stop_reason(self, job_id: str) -> str | None:
        return self._reasons.get(job_id)

    def release(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs.remove(job_id)
            self._values.pop(job_id, None)
            self._progress.pop(job_id, None)

    def beat(self) -> None:
        with self._lock:
            jobs, values, self._values = list(self._jobs), self._values, {}
            etas = {job_id: p.eta() for job_id, p in self._progress.items()}
        for job_id in jobs:
            row = values.get(job_id, {})
            if job_id in etas:
                row = {**row, "eta_s": etas[job_id]}
            try:
                state = self.ctx.db.heartbeat(job_id, self.worker, **row)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the fit goes on
                log.exception("heartbeat failed for %s", job_id)
                continue
            if state != HeartbeatState.OK:
                self._reasons[job_id] = state

    def run(self) -> None:
        while not self._done.is_set():  # the first beat at once, then every heartbeat_s or when woken
            self.beat()
            self._wake.wait(self.ctx.settings.heartbeat_s)
            self._wake.clear()  # a report after this is in the next beat, which comes at once

    def finish(self) -> None:
        self._done.set()
        self._wake.set()
        self.join(timeout=5)


class JobProgress:
    """One job's progress as its heartbeat reports it: monotonic, and below 1 until the job is recorded;
    and its ETA, from the time since its fit started."""

    def __init__(self, hb: Heartbeat, job_id: str) -> None:
        self.hb, self.job_id = hb, job_id
        self.frac, self.steps = 0.0, None
        self.started: float | None = None  # time.monotonic() when the fit began

    def start(self, planned_steps: int) -> None:
        """The fit begins: step 0 is written by a beat right away, so a client sees the job under way before
        the first steps report (on a large image they take seconds). A later start (a batch's member fitted
        alone after the batch broke) keeps the first one's clock and bar."""
        if self.started is not None:
            return
        self.started = time.monotonic()
        self.hb.track(self)
        self.hb.report(self.job_id, now=True, progress=self.frac, step=0, steps=planned_steps)

    def eta(self) -> float | None:
        return None if self.started is None else eta_seconds(time.monotonic() - self.started, self.frac)

    def __call__(self, p: Any) -> None:
        self.frac = min(0.99, max(self.frac, p.fraction))
        self.steps = p.total
        self.hb.report(self.job_id, progress=self.frac, step=p.step, steps=p.total, psnr=round(float(p.psnr), 3))
