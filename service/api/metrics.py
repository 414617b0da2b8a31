"""Prometheus metrics on a registry owned by the app. Job counts and fit durations are read from the job
table at scrape time, so they are right however many worker processes or machines there are."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.records import Database

FIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class _JobCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("tuner_jobs", "Jobs by state", labels=["state"])
        for state, n in self.db.jobs_by_state().items():
            jobs.add_metric([state], n)
        yield jobs
        seconds = self.db.fit_seconds()
        buckets = [(str(b), sum(1 for s in seconds if s <= b)) for b in FIT_BUCKETS]
        buckets.append(("+Inf", len(seconds)))
        yield HistogramMetricFamily("tuner_fit_seconds", "Wall time of successful fits", buckets=buckets,
                                    sum_value=sum(seconds))


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
