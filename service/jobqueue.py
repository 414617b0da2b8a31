"""The fit queue, shared by the API (which sends) and the worker (which runs): the task's name, the queue,
the Celery app's configuration, and sending a job. Messages carry a job id only, never data."""

from __future__ import annotations

from celery import Celery, group

from service.settings import Settings

FIT_TASK = "tuner.fit"
FIT_TILE_TASK = "tuner.fit_tile"  # one tile of a job fitted as tiles (issue 28)
FIT_QUEUE = "fit"


def create_celery(settings: Settings) -> Celery:
    """The Celery app of the fit queue: the API sends with it, the worker runs its tasks on it."""
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
        task_routes={FIT_TASK: {"queue": FIT_QUEUE}, FIT_TILE_TASK: {"queue": FIT_QUEUE}},
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
    return app


def send_fit(celery: Celery, job_id: str) -> None:
    """Queues the fit of `job_id` (raises when the broker cannot be reached)."""
    celery.send_task(FIT_TASK, args=[job_id], queue=FIT_QUEUE)


def send_tiles(celery: Celery, job_id: str, tiles: list[int]) -> None:
    """Queues the fit of each of `tiles` of `job_id` as one group: a task per tile, taken by whichever workers
    are free (no result backend: the tile records say which are done, and the last one assembles the blob)."""
    if tiles:
        group(celery.signature(FIT_TILE_TASK, args=[job_id, k], queue=FIT_QUEUE) for k in tiles).apply_async()
