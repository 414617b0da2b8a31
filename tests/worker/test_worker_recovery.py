"""A worker killed with SIGKILL in the middle of a fit: once another worker runs, the job is sent again by
the recovery scan (its heartbeat went stale) and succeeds in seconds, not after Redis's visibility
timeout (over an hour here, as in production). Also: a worker that only finds a finished job does nothing,
and a job whose workers keep dying is failed after its attempts run out."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import api_and_workers, submit, wait_fitting, wait_job

from service.records import QUEUED, RUNNING, Database, Job
from service.settings import Settings
from worker.app import FIT_QUEUE, FIT_TASK, create_celery


@pytest.fixture()
def stack(redis_url: str, tmp_path: Path):
    with api_and_workers(redis_url, tmp_path, {}) as (base, start):
        yield base, start, Settings(data_dir=tmp_path / "data", broker_url=redis_url)


def test_sigkilled_worker_job_is_picked_up_again(stack, parrots_path: Path) -> None:
    base, start, _ = stack
    first = start("worker", name="worker-a")
    job_id = submit(base, parrots_path, 300)
    seen = wait_fitting(base, job_id)
    assert seen[-1]["attempts"] == 1
    first.kill()
    killed_at = time.monotonic()
    time.sleep(1)
    assert httpx.get(f"{base}/v1/jobs/{job_id}").json()["status"] == "running"  # nobody knows yet

    start("worker", name="worker-b")
    final = wait_job(base, job_id, timeout=120)[-1]
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    assert time.monotonic() - killed_at < 120
    img = httpx.get(f"{base}/v1/images/{final['image_id']}").json()
    assert img["width"] == 96 and img["job_id"] == job_id


def test_rerun_of_a_finished_job_is_a_no_op(stack, parrots_path: Path) -> None:
    """A second delivery of the same message (a visibility-timeout redelivery) must not fit again."""
    base, start, settings = stack
    worker = start("worker", name="worker")
    job_id = submit(base, parrots_path, 30)
    done = wait_job(base, job_id, timeout=90)[-1]
    assert done["status"] == "succeeded"
    app = create_celery(settings)
    app.send_task(FIT_TASK, args=[job_id], queue=FIT_QUEUE)
    deadline = time.monotonic() + 60
    while f"job {job_id} not run: done" not in worker.tail() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"job {job_id} not run: done" in worker.tail()
    again = httpx.get(f"{base}/v1/jobs/{job_id}").json()
    assert again["attempts"] == 1 and again["finished_at"] == done["finished_at"]


def test_attempts_run_out(tmp_path: Path) -> None:
    """The claim refuses a job whose worker died max_attempts times and fails it with a clear error."""
    db = Database(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    db.add_job(Job(id="job_x", image_id="img_x", status=QUEUED, progress=0.0, step=0, params={}, upload_digest="0",
                   attempts=0, cancel_requested=0, created_at=time.time()))
    for attempt in range(1, 3):
        state, job = db.claim_job("job_x", f"w{attempt}", stale_after=0.0, max_attempts=2)
        assert state == "claimed" and job.attempts == attempt and job.status == RUNNING
        assert db.claim_job("job_x", "other", stale_after=60.0, max_attempts=2)[0] == "busy"
        time.sleep(0.01)  # the heartbeat is now stale for stale_after=0
        assert db.requeue_stale(0.001) == ["job_x"]
    state, job = db.claim_job("job_x", "w3", stale_after=0.0, max_attempts=2)
    assert state == "exhausted" and job.status == "failed" and "interrupted 2 times" in job.error
    assert db.heartbeat("job_x", "w2") == "lost"


def test_killed_fit_child_is_retried_by_the_same_worker(stack, parrots_path: Path) -> None:
    """The OOM-killer case: only the prefork child dies; the worker's main process lives on, and the job is
    fitted again (reject_on_worker_lost, then the stale-heartbeat scan) and succeeds."""
    base, start, _ = stack
    start("worker", name="worker")
    job_id = submit(base, parrots_path, 200)
    wait_fitting(base, job_id)
    db = Database(f"sqlite:///{_data_dir(stack) / 'tuner.sqlite'}")
    child_pid = int(db.get_job(job_id).worker.split(":")[1])  # host:pid:delivery of the fitting child
    os.kill(child_pid, signal.SIGKILL)
    final = wait_job(base, job_id, timeout=120)[-1]
    assert final["status"] == "succeeded" and final["attempts"] == 2, final


def _data_dir(stack) -> Path:  # noqa: ANN001
    return stack[2].data_dir
