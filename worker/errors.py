"""How a job's own trouble is handled: recorded on that job, while the worker's time limit is never caught."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded

if TYPE_CHECKING:
    from service.records import Job
    from worker.run import JobRun


@contextmanager
def job_errors(run: JobRun, job: Job) -> Iterator[None]:
    """Any error in the block settles `job` (cancelled, failed with the library's message, or an internal
    error) and the caller goes on with the other jobs; the soft time limit propagates, so that the run
    records every job it still holds as over time."""
    try:
        yield
    except SoftTimeLimitExceeded:
        raise
    except Exception as e:  # noqa: BLE001 - this job's trouble: recorded on it
        run.settle_error(job, e)
