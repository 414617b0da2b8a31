"""Worker liveness: each worker's main process beats here every recovery interval (worker/recovery.py), so an
API can tell whether any worker is running (readiness under `tuner serve`, TUNER_READY_NEEDS_WORKER)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from service.records.engine import Records
from service.records.tables import WorkerBeat


class WorkerRecords(Records):
    def worker_beat(self, name: str) -> None:
        now = time.time()
        with self.session() as s:
            row = s.get(WorkerBeat, name)
            if row is None:
                s.add(WorkerBeat(name=name, beat_at=now))
            else:
                row.beat_at = now

    def last_worker_beat(self) -> float | None:
        """When any worker last beat (Unix seconds), or None if none ever did."""
        with self.session() as s:
            return s.scalar(select(func.max(WorkerBeat.beat_at)))

    def live_workers(self, within: float) -> int:
        """How many worker main processes beat in the last `within` seconds."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(WorkerBeat)
                                .where(WorkerBeat.beat_at >= time.time() - within)) or 0)
