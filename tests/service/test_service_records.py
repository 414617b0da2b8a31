"""The records layer on SQLite and on PostgreSQL (a fresh database per run): concurrent claims of one job
give it to exactly one worker; queued jobs whose message may be lost are re-sent once per threshold, by one
scanner; a database made before `sent_at` existed gains the column and its waiting jobs are still found,
and one made before `eta_s` gains that column."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pg_fixtures import postgres_url  # noqa: F401 - a fixture
from sqlalchemy import text

from service.records import CANCELLED, QUEUED, RUNNING, Database, Job
from service.records.schema import BASELINE, downgrade


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.sqlite'}"
    return request.getfixturevalue("postgres_url")


def _job(db: Database, *, created_ago: float = 0.0, sent_ago: float | None = 0.0, status: str = QUEUED) -> str:
    now = time.time()
    job_id = "job_" + uuid.uuid4().hex
    db.add_job(Job(id=job_id, image_id="img_" + uuid.uuid4().hex[:8], status=status, progress=0.0, step=0,
                   params={"steps": 10}, upload_digest="0" * 64, attempts=0, cancel_requested=0,
                   created_at=now - created_ago, sent_at=None if sent_ago is None else now - sent_ago))
    return job_id


def _race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Runs fn(i) in n threads released together (each thread takes its own pooled connection)."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_concurrent_claims_give_a_job_to_one_worker(db_url: str) -> None:
    db = Database(db_url)
    for _ in range(5):
        job_id = _job(db)
        states = _race(6, lambda i, j=job_id: db.claim_job(j, f"w{i}", stale_after=60.0, max_attempts=3)[0])
        assert sorted(states) == ["busy"] * 5 + ["claimed"], states
        job = db.get_job(job_id)
        assert job.status == RUNNING and job.attempts == 1
        assert sum(db.heartbeat(job_id, f"w{i}") == "ok" for i in range(6)) == 1  # only the owner beats


def test_stale_running_job_is_reclaimed_once(db_url: str) -> None:
    db = Database(db_url)
    job_id = _job(db)
    assert db.claim_job(job_id, "dead", stale_after=60.0, max_attempts=3)[0] == "claimed"
    time.sleep(0.05)
    # Two scanners at once: the job goes back to queued once, and is stamped as sent for the re-send.
    found = _race(4, lambda i: db.requeue_stale(0.01))
    assert sorted(map(len, found)) == [0, 0, 0, 1]
    job = db.get_job(job_id)
    assert job.status == QUEUED and job.worker is None and time.time() - job.sent_at < 5
    states = _race(4, lambda i: db.claim_job(job_id, f"w{i}", stale_after=60.0, max_attempts=3)[0])
    assert sorted(states) == ["busy"] * 3 + ["claimed"]
    assert db.get_job(job_id).attempts == 2


def test_waiting_jobs_are_resent_once_per_threshold(db_url: str) -> None:
    db = Database(db_url)
    lost = _job(db, created_ago=100, sent_ago=100)
    fresh = _job(db, created_ago=100, sent_ago=1)  # sent recently: its message is presumably still queued
    running = _job(db, created_ago=100, sent_ago=100)
    assert db.claim_job(running, "w", stale_after=60.0, max_attempts=3)[0] == "claimed"
    cancelled = _job(db, created_ago=100, sent_ago=100)
    assert db.request_cancel(cancelled).status == CANCELLED
    # The API died between saving the job and sending it, in a version that left sent_at empty.
    unsent = _job(db, created_ago=100, sent_ago=None)

    # Several workers scan at once: each due job is re-sent by exactly one of them.
    found = _race(4, lambda i: db.resend_due(50.0))
    flat = [j for ids in found for j in ids]
    assert sorted(flat) == sorted([lost, unsent]), (found, lost, unsent)
    assert db.resend_due(50.0) == []  # once per threshold
    assert db.get_job(lost).status == QUEUED and time.time() - db.get_job(lost).sent_at < 5
    time.sleep(0.05)
    assert set(db.resend_due(0.01)) == {lost, fresh, unsent}  # past the threshold again: sent again


def test_database_from_before_sent_at_gains_the_column(db_url: str) -> None:
    db = Database(db_url)
    job_id = _job(db, created_ago=100, sent_ago=100)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN sent_at"))  # the schema of the first release
        downgrade(conn, BASELINE)  # and from before migrations (service/records/schema.py)
        conn.execute(text("DROP TABLE alembic_version"))
    db.engine.dispose()
    again = Database(db_url)  # as a restarted API or worker opens it
    job = again.get_job(job_id)
    assert job.sent_at is None and job.status == QUEUED
    assert job_id in again.resend_due(50.0)  # judged by created_at
    assert again.get_job(job_id).sent_at is not None
    Database(db_url).ping()  # a third opening finds the column and changes nothing


def test_database_from_before_eta_s_gains_the_column(db_url: str) -> None:
    """`jobs.eta_s` is added to an older database; the heartbeat writes it, and a claim or a re-queue clears
    the last run's estimate."""
    db = Database(db_url)
    job_id = _job(db)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN eta_s"))
        downgrade(conn, BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
    db.engine.dispose()
    again = Database(db_url)
    assert again.get_job(job_id).eta_s is None
    assert again.claim_job(job_id, "w1", stale_after=60.0, max_attempts=3)[0] == "claimed"
    assert again.heartbeat(job_id, "w1", progress=0.5, eta_s=12.5) == "ok"
    assert again.get_job(job_id).eta_s == 12.5
    time.sleep(0.05)
    assert again.requeue_stale(0.01) == [job_id]
    assert again.get_job(job_id).eta_s is None
    assert again.heartbeat(job_id, "w1", eta_s=3.0) == "lost"  # the job is not w1's any more
    assert again.claim_job(job_id, "w2", stale_after=60.0, max_attempts=3)[0] == "claimed"
    assert again.heartbeat(job_id, "w2", eta_s=7.0) == "ok"
    assert again.finish_job(job_id, "w2", "succeeded", progress=1.0, eta_s=0.0)
    assert again.get_job(job_id).eta_s == 0.0


def test_processes_starting_together_create_the_schema_once(db_url: str) -> None:
    """An API and several workers opening a fresh database at once: on PostgreSQL, concurrent CREATE TABLEs
    collide (a unique violation in pg_type) unless schema setup takes turns, as it does here."""
    errors = _race(6, lambda i: _open(db_url))
    assert errors == [None] * 6
    assert Database(db_url).count_jobs((QUEUED,)) == 0


def _open(url: str) -> str | None:
    db = Database(url)  # its own engine and connections, like another process
    try:
        db.ping()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return repr(e)
    finally:
        db.engine.dispose()
    return None
