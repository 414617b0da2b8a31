"""What a task needs, built lazily in the process that runs it (a forked child gets its own)."""

from __future__ import annotations

import os
from functools import cached_property

from celery import Celery

from service import jobqueue
from service.records import Database
from service.settings import Settings
from service.storage import BlobStore, make_store


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.resolved_database_url)

    @cached_property
    def store(self) -> BlobStore:
        return make_store(self.settings)

    @cached_property
    def queue(self) -> Celery:
        """The fit queue, to send tiles' tasks (the worker's own app sets itself here)."""
        return jobqueue.create_celery(self.settings)


def torch_threads_per_child(concurrency: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))
