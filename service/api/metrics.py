"""Prometheus metrics on a registry owned by the app. Job counts and fit durations are read from the job
table at scrape time, so they are right however many worker processes or machines there are."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.records import Database
from service.records.states import ACTIVE, STATES

FIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class _JobCollector(Collector):
    """Job counts and fit times, read from the job table so they are right however many workers there are,
    and kept cheap to scrape: queued and running jobs are counted by the status index, and finished jobs are
    added up as they finish (each scrape reads the jobs finished since the last one, by the finished_at index;
    the first scrape of a process reads them all once). A window of LAG_S seconds is read again, so a job whose
    finish committed late, or whose worker's clock is behind, is still counted once."""

    LAG_S = 300.0

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._finished = {state: 0 for state in STATES if state not in ACTIVE}
        self._buckets = [0] * len(FIT_BUCKETS)
        self._count, self._sum = 0, 0.0
        self._high = float("-inf")  # the latest finished_at counted
        self._recent: dict[str, float] = {}  # ids counted within LAG_S of _high

    def _catch_up(self) -> None:
        while True:
            rows = self.db.finished_since(self._high - self.LAG_S)
            fresh = [r for r in rows if r[0] not in self._recent]
            for job_id, status, finished_at, seconds in fresh:
                self._recent[job_id] = finished_at
                self._high = max(self._high, finished_at)
                self._finished[status] = self._finished.get(status, 0) + 1
                if seconds is not None and status == "succeeded":
                    self._count += 1
                    self._sum += seconds
                    for i, b in enumerate(FIT_BUCKETS):
                        self._buckets[i] += seconds <= b
            self._recent = {k: t for k, t in self._recent.items() if t > self._high - self.LAG_S}
            if len(rows) < 5000 or not fresh:
                return

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._catch_up()
            jobs = GaugeMetricFamily("tuner_jobs", "Jobs by state", labels=["state"])
            for state, n in {**self.db.active_counts(), **self._finished}.items():
                jobs.add_metric([state], n)
            buckets = [(str(b), n) for b, n in zip(FIT_BUCKETS, self._buckets, strict=True)]
            buckets.append(("+Inf", self._count))
            total = self._sum
        yield jobs
        yield HistogramMetricFamily("tuner_fit_seconds", "Wall time of successful fits", buckets=buckets,
                                    sum_value=total)


class _RendererCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        from tuner_model.render import compiled_in_use

        yield GaugeMetricFamily("tuner_render_compiled", "1 once renders use the compiled sine "
                                "(TUNER_RENDER_COMPILE), 0 while eager", value=int(compiled_in_use()))


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_JobCollector(db))
        self.registry.register(_RendererCollector())
        self.render_seconds = Histogram("tuner_render_seconds", "Render latency (cache misses included)",
                                        ["cache"], registry=self.registry,
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.uploads = Counter("tuner_uploads_total", "Accepted uploads", ["deduplicated"], registry=self.registry)
        self.requests = Counter("tuner_http_requests_total", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=self.registry)
