"""The worker's Celery app: the fit queue's app (service/jobqueue.py) with the task context and, for a
worker process, the tasks registered."""

from __future__ import annotations

from celery import Celery

from service import jobqueue
from service.jobqueue import FIT_QUEUE, FIT_TASK
from service.settings import Settings
from worker import tasks
from worker.context import WorkerContext

__all__ = ["FIT_QUEUE", "FIT_TASK", "create_celery"]


def create_celery(settings: Settings, *, with_tasks: bool = False) -> Celery:
    app = jobqueue.create_celery(settings)
    app.tuner = WorkerContext(settings)  # type: ignore[attr-defined]
    app.tuner.queue = app  # type: ignore[attr-defined]
    if with_tasks:
        tasks.register(app)
    return app
