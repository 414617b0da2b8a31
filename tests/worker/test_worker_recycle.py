"""Issue 24's soak: a worker stalled after its pool child was recycled (TUNER_MAX_TASKS_PER_CHILD). A suspect:
the main process forks the new child while its recovery thread is inside SQLite, the child inherits SQLite's
process-wide mutexes locked by a thread it does not have, and its first query can wait forever (the job stays
queued and, with prefetch 1, the worker takes nothing else). That race is microseconds wide, so this test holds
a recovery pass open (a pause point inside it) while a real worker (real Redis, a child recycled after every
task) recycles its child: no child may be forked until the pass is over, and once it is, the next job runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from test_service_e2e import FAST, Proc

from service.jobqueue import create_celery, send_fit
from service.records import QUEUED, SUCCEEDED, Database, Job, new_job_id
from service.settings import Settings
from service.storage import make_store, put_content


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _wait(cond, timeout: float, what: str, worker: Proc) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert worker.p.poll() is None, worker.tail()
        assert time.monotonic() < deadline, f"{what} after {timeout} s\n{worker.tail()}"
        time.sleep(0.1)


def test_no_pool_child_is_forked_during_a_recovery_pass(redis_url: str, tmp_path: Path, parrots_path: Path) -> None:
    import redis

    # A database of the test's own on the same server: the other Redis tests flush theirs.
    url = redis_url.rsplit("/", 1)[0] + "/11" if redis_url.rsplit("/", 1)[-1].isdigit() else redis_url
    redis.Redis.from_url(url).flushdb()
    data, pauses = tmp_path / "data", tmp_path / "pauses"
    pauses.mkdir()
    env = {**FAST, "TUNER_BROKER_URL": url, "TUNER_DATA_DIR": str(data), "TUNER_COMPARISONS": "0",
           "TUNER_MAX_TASKS_PER_CHILD": "1", "TUNER_RECOVERY_INTERVAL_S": "0.2", "TUNER_TEST_PAUSE_DIR": str(pauses)}
    settings = Settings(data_dir=data, broker_url=url)
    db = Database(settings.resolved_database_url)
    digest = put_content(make_store(settings), "uploads", parrots_path.read_bytes())
    app = create_celery(settings)

    def send(steps: int) -> str:
        job_id, now = new_job_id(), time.time()
        db.add_job(Job(id=job_id, image_id=f"img_{job_id}", status=QUEUED, progress=0.0, step=0, steps=steps,
                       params={"steps": steps}, upload_digest=digest, attempts=0, cancel_requested=0,
                       created_at=now, sent_at=now))
        send_fit(app, job_id)
        return job_id

    worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
    try:
        _wait(lambda: " ready." in worker.tail(), 60, "the worker is not ready", worker)
        (pauses / "worker-recovery-pass").touch()  # the next recovery pass holds there
        _wait((pauses / "worker-recovery-pass.held").exists, 30, "no recovery pass reached the pause", worker)

        first = send(10)  # run by the child forked at start, which then exits (one task per child)
        _wait(lambda: db.get_job(first).status == SUCCEEDED, 90, f"job {first} not done", worker)
        child = int(db.get_job(first).worker.split(":")[1])
        _wait(lambda: child not in _children(worker.p.pid), 30, f"child {child} not recycled", worker)

        second = send(10)
        # Before the fix the replacement child was forked here, mid-pass, within a second.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert not _children(worker.p.pid), "a pool child was forked while a recovery pass was under way"
            assert db.get_job(second).status == QUEUED
            time.sleep(0.1)

        (pauses / "worker-recovery-pass.go").touch()  # the pass ends: the fork goes ahead, the job runs
        _wait(lambda: db.get_job(second).status == SUCCEEDED, 90, f"job {second} not done", worker)
        assert db.get_job(second).attempts == 1
    finally:
        worker.kill()
        worker.stop()
