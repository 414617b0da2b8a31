"""Building the Celery app from `Settings`. The API uses the same app to send tasks by name; only the
worker imports the task bodies (and, inside its child processes, torch and CUDA)."""

from __future__ import annotations

import os
from functools import cached_property

from celery import Celery

from service.db import Database
from service.settings import Settings
from service.storage import BlobStore, make_store

FIT_TASK = "tuner.fit"
FIT_QUEUE = "fit"


class WorkerContext:
    """What a task needs, built lazily in the process that runs it (a forked child gets its own)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @cached_property
    def store(self) -> BlobStore:
        return make_store(self.settings)


def create_celery(settings: Settings, *, with_tasks: bool = False) -> Celery:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = settings.resolved_broker_url
    transport_options: dict[str, object] = {"visibility_timeout": settings.visibility_timeout}
    if broker.startswith("sqla+"):
        # kombu hands these to SQLAlchemy's create_engine: wait out the API's and worker's short locks.
        transport_options = {"connect_args": {"timeout": 30}}
    app = Celery("tuner", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the job table is the truth; no result backend to fill
        task_routes={FIT_TASK: {"queue": FIT_QUEUE}},
        task_default_queue=FIT_QUEUE,
        # Ack after the fit: a worker that dies mid-fit leaves the message to be delivered again.
        task_acks_late=True,
        # A child killed by a signal or OOM requeues its message; the attempts counter in the job record
        # stops a job that kills its worker from looping forever.
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # with late acks: reserve exactly one fit at a time
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        # Above the hard limit, or Redis would hand a long healthy fit to a second worker.
        broker_transport_options=transport_options,
        worker_max_tasks_per_child=settings.max_tasks_per_child,  # returns the torch/CUDA caches to the OS
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 1.0},
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
    )
    app.tuner = WorkerContext(settings)  # type: ignore[attr-defined]
    if with_tasks:
        from . import tasks

        tasks.register(app)
    return app


def torch_threads_per_child(concurrency: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))
