"""Issue 28: a job above the working size is fitted as tiles, one task each, across the workers.

- The records (SQLite and PostgreSQL): fanning out makes one row per tile once; a tile is claimed by one
  worker at a time and not at all once its job is cancelled; its beats make the job's progress the mean of
  its tiles'; of the tiles finishing, exactly the last sees none left; a lost worker's tile alone goes back
  to the queue; a job whose tiles are done but whose blob is missing goes back to its own task.
- In process, on the real encoder (the working size lowered to tile a 96x64 image in 2 x 2): the job's own
  delivery sends its tiles, each tile's delivery fits and stores it, the last one assembles one version-4
  blob and settles the job; a duplicate delivery does nothing; a tile whose worker died is fitted again alone
  and the others are not; a cancelled job's tiles stop.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from pg_fixtures import postgres_url  # noqa: F401 - a fixture

from service.estimate import job_plan
from service.records import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Database, Job
from service.settings import Settings
from service.storage import BlobNotFound, put_content
from tuner_model.codec import read_info
from tuner_model.rate.request import EncodeRequest
from worker.context import WorkerContext
from worker.run import run_fit
from worker.tiles import run_tile, tile_key

WORKING = (56, 40)  # a 96x64 image is 2 x 2 tiles of 56 x 40


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'tuner.sqlite'}")
    return Database(request.getfixturevalue("postgres_url"))


def _job(db: Database, status: str = RUNNING, worker: str = "coord") -> str:
    job_id = "job_" + uuid.uuid4().hex
    db.add_job(Job(id=job_id, image_id="img_" + uuid.uuid4().hex[:16], status=status, progress=0.0, step=0,
                   params={}, upload_digest="0" * 64, attempts=1, cancel_requested=0, created_at=time.time(),
                   started_at=time.time(), heartbeat_at=time.time(), worker=worker))
    return job_id


# Records --------------------------------------------------------------------------------------------------
def test_fan_out_makes_the_tiles_once_and_sends_only_those_to_fit(db: Database) -> None:
    job_id = _job(db)
    assert db.fan_out(job_id, "someone else", [100] * 4, 20.0) is None  # not this worker's job
    assert db.fan_out(job_id, "coord", [100] * 4, 20.0) == [0, 1, 2, 3]
    assert db.get_job(job_id).tiles == 4
    assert db.claim_tile(job_id, 1, "w1", 20.0, 3) == "claimed"
    assert db.claim_tile(job_id, 1, "w2", 20.0, 3) == "busy"  # one worker at a time
    assert db.finish_tile(job_id, 1, "w1", bytes=10) == 3
    assert db.claim_tile(job_id, 2, "w2", 20.0, 3) == "claimed"
    # fanned out again (the job sent again): the rows stay, the done and running tiles are not sent
    assert db.fan_out(job_id, "coord", [100] * 4, 20.0) == [0, 3]
    assert [t.status for t in db.get_tiles(job_id)] == [QUEUED, SUCCEEDED, RUNNING, QUEUED]
    assert db.claim_tile(job_id, 1, "w3", 20.0, 3) == "done"


def test_tile_beats_make_the_jobs_progress_and_the_last_tile_is_seen_once(db: Database) -> None:
    job_id = _job(db)
    db.fan_out(job_id, "coord", [100] * 2, 20.0)
    for k in range(2):
        assert db.claim_tile(job_id, k, f"w{k}", 20.0, 3) == "claimed"
    assert db.tile_heartbeat(job_id, 0, "w0", progress=0.5, step=10) == "ok"
    assert db.tile_heartbeat(job_id, 1, "w1", progress=0.3, step=6) == "ok"
    job = db.get_job(job_id)
    assert job.progress == pytest.approx(0.4) and job.step == 16 and job.eta_s is not None
    assert db.tile_heartbeat(job_id, 1, "not w1", progress=0.9) == "lost"
    # two tiles finishing at once: exactly one sees none left
    lefts: list[int | None] = []
    threads = [threading.Thread(target=lambda k=k: lefts.append(db.finish_tile(job_id, k, f"w{k}")))
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lefts) == [0, 1]
    assert db.get_job(job_id).progress == pytest.approx(0.99)  # 1 only once the blob is stored


def test_a_cancelled_tiled_job_ends_at_once_and_its_tiles_stop(db: Database) -> None:
    job_id = _job(db)
    db.fan_out(job_id, "coord", [100] * 3, 20.0)
    assert db.claim_tile(job_id, 0, "w0", 20.0, 3) == "claimed"
    db.request_cancel(job_id)
    assert db.get_job(job_id).status == CANCELLED  # no task owns the job row: cancelled now
    assert db.tile_heartbeat(job_id, 0, "w0", progress=0.2) == "cancel"
    assert db.claim_tile(job_id, 1, "w1", 20.0, 3) == "done"  # a queued tile is never fitted
    assert db.finish_tile(job_id, 0, "w0") is None
    assert db.requeue_tiles(0.0, 0.0) == []  # nothing of a cancelled job is sent again


def test_a_lost_workers_tile_alone_goes_back_and_a_missing_assembly_is_sent_again(db: Database) -> None:
    job_id = _job(db)
    db.fan_out(job_id, "coord", [100] * 3, 20.0)
    for k in range(3):
        assert db.claim_tile(job_id, k, f"w{k}", 20.0, 3) == "claimed"
    assert db.finish_tile(job_id, 0, "w0") == 2
    time.sleep(0.3)
    assert db.tile_heartbeat(job_id, 2, "w2", progress=0.5) == "ok"  # w2 beats; w1 stopped
    assert db.requeue_tiles(0.2, 3600.0) == [(job_id, 1)]
    assert db.requeue_stale(0.2) == []  # the job itself is its tiles' to recover
    assert db.claim_tile(job_id, 1, "w1b", 20.0, 3) == "claimed"
    assert db.get_tiles(job_id)[1].attempts == 2 and db.get_tiles(job_id)[0].attempts == 1
    assert db.finish_tile(job_id, 1, "w1b") == 1
    assert db.finish_tile(job_id, 2, "w2") == 0
    assert db.requeue_assemblies(3600.0) == []  # the assembler is alive
    time.sleep(0.3)
    assert db.requeue_assemblies(0.2) == [job_id]  # ... until it stops beating: the job's own task again
    assert db.get_job(job_id).status == QUEUED


def test_a_tile_interrupted_too_often_fails_its_job(db: Database) -> None:
    job_id = _job(db)
    db.fan_out(job_id, "coord", [100] * 2, 20.0)
    for attempt in range(2):
        assert db.claim_tile(job_id, 0, f"w{attempt}", 0.0, 2) == "claimed"
        time.sleep(0.01)
    assert db.claim_tile(job_id, 0, "w9", 0.0, 2) == "exhausted"
    job = db.get_job(job_id)
    assert job.status == FAILED and "tile 0" in job.error


# In process -----------------------------------------------------------------------------------------------
@pytest.fixture()
def ctx(tmp_path: Path) -> WorkerContext:
    settings = Settings(data_dir=tmp_path / "data", fit_device="cpu", heartbeat_s=0.1, stale_after_s=5.0,
                        fair_scheduling=False, tile_working_size=WORKING, comparisons=False)
    settings.data_dir.mkdir(parents=True)
    return WorkerContext(settings)


def _submit(ctx: WorkerContext, png: bytes, steps: int = 24) -> Job:
    digest = put_content(ctx.store, "uploads", png)
    job = Job(id="job_" + uuid.uuid4().hex, image_id="img_" + uuid.uuid4().hex[:16], status=QUEUED, progress=0.0,
              step=0, params={"steps": steps, "effort": 1}, upload_digest=digest, attempts=0, cancel_requested=0,
              created_at=time.time(), sent_at=time.time())
    ctx.db.add_job(job)
    return job


def test_a_tiled_job_is_fanned_out_fitted_tile_by_tile_and_assembled_once(ctx: WorkerContext,
                                                                            parrots_path: Path) -> None:
    job = _submit(ctx, parrots_path.read_bytes())
    out = run_fit(ctx, job.id, "d0")
    assert out["status"] == "running"
    assert [t.status for t in ctx.db.get_tiles(job.id)] == [QUEUED] * 4
    assert run_fit(ctx, job.id, "d0-again")["skipped"] == "busy"  # the job is under way: nothing redone

    results = [run_tile(ctx, job.id, k, f"t{k}") for k in range(4)]
    assert [r["status"] for r in results] == ["fitted"] * 4
    assert [r.get("job_status") for r in results] == [None, None, None, "succeeded"]
    done = ctx.db.get_job(job.id)
    assert (done.status, done.progress, done.eta_s) == (SUCCEEDED, 1.0, 0.0) and done.psnr > 15
    image = ctx.db.get_image(job.image_id)
    blob = ctx.store.get(f"blobs/{image.blob_digest}")
    info = read_info(blob)
    assert (info.width, info.height, info.grid.count) == (96, 64, 4)
    plan = job_plan(EncodeRequest(steps=24, effort=1), 96, 64, 3, ctx.settings)
    assert image.bytes == len(blob) <= plan.budget  # the default rate over the whole image
    for k in range(4):  # the payloads are gone once the blob is stored
        with pytest.raises(BlobNotFound):
            ctx.store.get(tile_key(job.id, k))
    assert run_tile(ctx, job.id, 2, "dup")["skipped"] == "done"  # a duplicate delivery does nothing


def test_a_lost_tile_is_fitted_again_alone(ctx: WorkerContext, parrots_path: Path) -> None:
    job = _submit(ctx, parrots_path.read_bytes())
    run_fit(ctx, job.id, "d0")
    for k in (0, 2, 3):
        assert run_tile(ctx, job.id, k, f"t{k}")["status"] == "fitted"
    # tile 1's worker was killed mid-fit: claimed, then silent
    assert ctx.db.claim_tile(job.id, 1, "dead", 5.0, 3) == "claimed"
    assert run_tile(ctx, job.id, 1, "too-soon")["skipped"] == "busy"
    assert ctx.db.requeue_tiles(0.0, 3600.0) == [(job.id, 1)]
    out = run_tile(ctx, job.id, 1, "again")
    assert out["job_status"] == "succeeded"
    assert [t.attempts for t in ctx.db.get_tiles(job.id)] == [1, 2, 1, 1]  # only the lost tile ran twice


def test_a_cancelled_tiled_job_stops_its_running_tile(ctx: WorkerContext, parrots_path: Path) -> None:
    job = _submit(ctx, parrots_path.read_bytes(), steps=5000)  # minutes of fitting, were it not cancelled
    run_fit(ctx, job.id, "d0")
    assert ctx.db.get_job(job.id).status == RUNNING
    threading.Timer(1.0, lambda: ctx.db.request_cancel(job.id)).start()
    started = time.monotonic()
    out = run_tile(ctx, job.id, 0, "t0")
    assert out["status"] == "cancel" and time.monotonic() - started < 10
    assert ctx.db.get_job(job.id).status == CANCELLED
    assert run_tile(ctx, job.id, 1, "t1")["skipped"] == "done"
