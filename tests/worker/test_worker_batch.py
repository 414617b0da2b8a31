"""The worker fits queued jobs of one shape and parameters together (issue 5).

- The records: `claim_batch` takes queued jobs of one batch key, oldest first, and never gives a job to two
  workers, on SQLite and PostgreSQL, also against concurrent `claim_job`s; an old database gains the columns.
- `run_fit` in process, on real records, storage and encoder (no broker): a batch is fitted and each job
  recorded with its batch size; the partners' own messages are no-ops; a partner with a missing upload
  fails alone; one cancelled member leaves the others; a broken batched path falls back to one at a time
  for the jobs not yet recorded, their progress never going backwards.
- End to end: real `tuner api` and `tuner worker` on real Redis, three same-size uploads and one of another
  size queued before the worker starts.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from pg_fixtures import postgres_url  # noqa: F401 - a fixture
from PIL import Image
from sqlalchemy import inspect, text
from test_service_e2e import FAST, Proc, free_port, wait_job, wait_ready
from test_service_records import _race

from service.records import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Database, Job
from service.records.schema import BASELINE, downgrade
from service.settings import Settings
from service.storage import put_content
from tuner_model.rate.plan import resolve
from tuner_model.rate.request import EncodeRequest
from worker.context import WorkerContext
from worker.run import run_fit

KEY = resolve(EncodeRequest(steps=30), 48, 32, 3).batch_key


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.sqlite'}"
    return request.getfixturevalue("postgres_url")


def _job(db: Database, key: str | None = KEY, *, created_ago: float = 0.0, status: str = QUEUED,
         attempts: int = 0, digest: str = "0" * 64, steps: int = 30) -> str:
    job_id = "job_" + uuid.uuid4().hex
    db.add_job(Job(id=job_id, image_id="img_" + uuid.uuid4().hex[:16], status=status, progress=0.0, step=0,
                   params={"steps": steps}, upload_digest=digest, attempts=attempts, cancel_requested=0,
                   created_at=time.time() - created_ago, sent_at=time.time(), batch_key=key))
    return job_id


# Records --------------------------------------------------------------------------------------------------
def test_claim_batch_takes_the_oldest_alike_queued_jobs(db_url: str) -> None:
    db = Database(db_url)
    oldest, older, old, newest = (_job(db, created_ago=a) for a in (40, 30, 20, 10))
    other_key = _job(db, key=KEY.replace("48x32", "32x48"), created_ago=50)
    running = _job(db, created_ago=60)
    assert db.claim_job(running, "elsewhere", stale_after=60.0, max_attempts=3)[0] == "claimed"
    worn = _job(db, created_ago=70, attempts=3)  # its own message will fail it ("exhausted")
    unkeyed = _job(db, key=None, created_ago=80)

    got = db.claim_batch(KEY, "w1", limit=3, max_attempts=3)
    assert [j.id for j in got] == [oldest, older, old]
    for j in got:
        row = db.get_job(j.id)
        assert (row.status, row.worker, row.attempts) == (RUNNING, "w1", 1) and row.heartbeat_at
    assert db.heartbeat(oldest, "w1") == "ok"
    assert [j.id for j in db.claim_batch(KEY, "w2", limit=5, max_attempts=3)] == [newest]
    assert db.claim_batch(KEY, "w3", limit=5, max_attempts=3) == []
    assert db.get_job(running).worker == "elsewhere"
    for untouched in (other_key, worn, unkeyed):
        assert db.get_job(untouched).status == QUEUED


def test_concurrent_batch_claims_never_share_a_job(db_url: str) -> None:
    db = Database(db_url)
    for _round in range(3):
        ids = {_job(db, created_ago=i) for i in range(7)}
        # Four batch claimers and, on one of the jobs, three single claims, all released together.
        contested = sorted(ids)[0]

        def claim(i: int, contested: str = contested) -> list[str]:
            if i < 4:
                return [j.id for j in db.claim_batch(KEY, f"b{i}", limit=3, max_attempts=3)]
            state, _ = db.claim_job(contested, f"s{i}", stale_after=60.0, max_attempts=3)
            return [contested] if state == "claimed" else []

        results = _race(7, claim)
        flat = [j for r in results for j in r]
        assert sorted(flat) == sorted(ids), results  # every job taken, none twice
        owners = {j: f"{'b' if i < 4 else 's'}{i}" for i, r in enumerate(results) for j in r}
        for job_id, owner in owners.items():
            row = db.get_job(job_id)
            assert row.status == RUNNING and row.worker == owner and row.attempts == 1
            db.finish_job(job_id, owner, SUCCEEDED)


def test_old_database_gains_the_batch_columns(db_url: str) -> None:
    db = Database(db_url)
    job_id = _job(db)
    with db.engine.begin() as conn:  # from before migrations (service/records/schema.py), without the batch columns
        downgrade(conn, BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP INDEX ix_jobs_batch_key"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN batch_key"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN batch_size"))
    db.engine.dispose()
    again = Database(db_url)  # as a restarted API or worker opens it
    job = again.get_job(job_id)
    assert job.batch_key is None and job.batch_size is None and job.status == QUEUED
    indexes = {ix["name"] for ix in inspect(again.engine).get_indexes("jobs")}
    assert "ix_jobs_batch_key" in indexes
    newer = _job(again)
    assert [j.id for j in again.claim_batch(KEY, "w", limit=5, max_attempts=3)] == [newer]
    Database(db_url).ping()  # a third opening finds everything and changes nothing


# The worker in process ------------------------------------------------------------------------------------
def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _crops(parrots: np.ndarray, size: tuple[int, int] = (48, 32)) -> list[bytes]:
    w, h = size
    return [_png(parrots[r : r + h, c : c + w]) for r, c in ((0, 0), (32, 0), (0, 48), (32, 48))]


@pytest.fixture()
def ctx(tmp_path: Path) -> WorkerContext:
    # Each delivery here claims its own message's job (fair scheduling would run the fairest queued job
    # instead: tests/worker/test_fair.py), so the batches these tests expect are the ones they build.
    settings = Settings(data_dir=tmp_path / "data", fit_device="cpu", fit_batch_on_cpu=True, heartbeat_s=0.1,
                        stale_after_s=5.0, fair_scheduling=False)
    settings.data_dir.mkdir(parents=True)
    return WorkerContext(settings)


def _submit(ctx: WorkerContext, png: bytes, steps: int = 30, created_ago: float = 0.0) -> str:
    digest = put_content(ctx.store, "uploads", png)
    key = resolve(EncodeRequest(steps=steps), *Image.open(io.BytesIO(png)).size, 3).batch_key
    return _job(ctx.db, key, digest=digest, created_ago=created_ago, steps=steps)


def test_worker_fits_alike_jobs_together(ctx: WorkerContext, parrots: np.ndarray) -> None:
    pngs = _crops(parrots)
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(pngs[:3])]
    odd = _submit(ctx, _png(parrots[:32, :40]), created_ago=20)  # another size: never in this batch
    capped = ctx.settings.model_copy(update={"fit_batch_max": 2})
    out = run_fit(WorkerContext(capped), ids[1], "d1")  # at most 2: itself and the oldest alike job
    assert out["status"] == SUCCEEDED and out["batch"] == [ids[1], ids[0]]
    for job_id in ids[:2]:
        job = ctx.db.get_job(job_id)
        assert (job.status, job.batch_size, job.attempts, job.progress) == (SUCCEEDED, 2, 1, 1.0)
        img = ctx.db.get_image(job.image_id)
        assert img.width == 48 and img.job_id == job_id and img.psnr == job.psnr and img.psnr > 15
    assert ctx.db.get_job(ids[2]).status == QUEUED and ctx.db.get_job(odd).status == QUEUED
    # The partner's own message comes later and does nothing.
    assert run_fit(ctx, ids[0], "d0")["skipped"] == "done"
    assert ctx.db.get_job(ids[0]).attempts == 1
    # The odd one out is fitted alone, and nothing alike is left for the last one.
    assert run_fit(ctx, odd, "d3")["status"] == SUCCEEDED and ctx.db.get_job(odd).batch_size == 1
    assert run_fit(ctx, ids[2], "d2").get("batch") is None and ctx.db.get_job(ids[2]).batch_size == 1


def test_batch_of_three_matches_fitting_alone(ctx: WorkerContext, parrots: np.ndarray) -> None:
    pngs = _crops(parrots)[:3]
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(pngs)]
    assert run_fit(ctx, ids[0], "d")["batch"] == ids
    batched = {j: ctx.db.get_job(j) for j in ids}
    assert all(job.batch_size == 3 and job.status == SUCCEEDED for job in batched.values())
    alone_ctx = WorkerContext(ctx.settings.model_copy(update={"fit_batch_on_cpu": False,
                                                              "data_dir": ctx.settings.data_dir / "alone"}))
    alone_ctx.settings.data_dir.mkdir()
    for png, job_id in zip(pngs, ids, strict=True):
        solo = _submit(alone_ctx, png)
        assert "batch" not in run_fit(alone_ctx, solo, "s")
        assert abs(alone_ctx.db.get_job(solo).psnr - batched[job_id].psnr) < 0.05


def test_a_missing_upload_fails_alone(ctx: WorkerContext, parrots: np.ndarray) -> None:
    pngs = _crops(parrots)[:3]
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(pngs)]
    lost = ctx.db.get_job(ids[1]).upload_digest
    ctx.store.delete(f"uploads/{lost}")
    run_fit(ctx, ids[0], "d")
    jobs = [ctx.db.get_job(j) for j in ids]
    assert jobs[1].status == FAILED and "missing" in jobs[1].error
    assert [(j.status, j.batch_size) for j in (jobs[0], jobs[2])] == [(SUCCEEDED, 2), (SUCCEEDED, 2)]


def test_cancelling_one_member_leaves_the_others(ctx: WorkerContext, parrots: np.ndarray) -> None:
    ids = [_submit(ctx, png, steps=1000, created_ago=10 - i) for i, png in enumerate(_crops(parrots)[:3])]

    def cancel_when_fitting() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = ctx.db.get_job(ids[2])
            if job.status == RUNNING and job.step > 0:
                ctx.db.request_cancel(ids[2])
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_fitting)
    canceller.start()
    run_fit(ctx, ids[0], "d")
    canceller.join()
    cancelled = ctx.db.get_job(ids[2])
    assert cancelled.status == CANCELLED and cancelled.error == "cancelled" and cancelled.step < 1000
    assert ctx.db.get_image(cancelled.image_id) is None
    # Recorded at once, not when the shared fit ended: well before the others finished.
    others = [ctx.db.get_job(j) for j in ids[:2]]
    assert all(j.status == SUCCEEDED and j.batch_size == 3 for j in others)
    assert cancelled.finished_at < min(j.finished_at for j in others) - 0.5


def test_broken_batched_path_falls_back_to_one_at_a_time(ctx: WorkerContext, parrots: np.ndarray,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import fitting  # where the worker looks the batched encoder up

    real = fitting.iter_encode

    def broken(images, *args: object, **kwargs: object):  # noqa: ANN001, ANN202
        if len(images) == 1:  # a job fitted on its own (K = 1 goes through the batched encoder too)
            yield from real(images, *args, **kwargs)
            return
        first = next(real(images, *args, **kwargs))  # the batch gets as far as one blob, then breaks
        yield first
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(fitting, "iter_encode", broken)
    writes: dict[str, list[float]] = {}
    real_beat = ctx.db.heartbeat

    def spy(job_id: str, worker: str, **values: object) -> str:
        if "progress" in values:
            writes.setdefault(job_id, []).append(float(values["progress"]))
        return real_beat(job_id, worker, **values)

    ctx.db.heartbeat = spy  # type: ignore[method-assign]
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(_crops(parrots)[:3])]
    out = run_fit(ctx, ids[0], "d")
    assert out["status"] == SUCCEEDED and out["batch"] == ids
    # The first blob came from the batch; the two jobs not yet recorded were fitted one at a time.
    assert [(j.status, j.batch_size) for j in map(ctx.db.get_job, ids)] == [(SUCCEEDED, 3), (SUCCEEDED, 1),
                                                                             (SUCCEEDED, 1)]
    for job_id in ids[1:]:  # refitted alone on the same bar: it never went backwards
        assert writes.get(job_id) and writes[job_id] == sorted(writes[job_id]), writes


# End to end -----------------------------------------------------------------------------------------------
def test_worker_batches_jobs_queued_before_it_starts(redis_url: str, tmp_path: Path, parrots: np.ndarray) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(tmp_path / "data"),
           "TUNER_FIT_BATCH_ON_CPU": "1"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = [Proc(["api", "--port", str(port)], env, tmp_path / "api.log")]
    try:
        wait_ready(base, procs[0])
        same = _crops(parrots)[:3]
        odd = _png(parrots[:32, :40])
        ids = []
        for png in (same[0], odd, same[1], same[2]):  # the odd size waits in the middle of the queue
            r = httpx.post(f"{base}/v1/images", params={"steps": 40}, timeout=30,
                           files={"file": ("x.png", png, "image/png")})
            assert r.status_code == 202, r.text
            ids.append(r.json()["job_id"])
        same_ids, odd_id = [ids[0], ids[2], ids[3]], ids[1]
        assert all(httpx.get(f"{base}/v1/jobs/{j}").json()["status"] == "queued" for j in ids)

        worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
        procs.append(worker)
        finals = {j: wait_job(base, j, timeout=120)[-1] for j in ids}
        for j in same_ids:
            assert finals[j]["status"] == "succeeded", (finals[j], worker.tail())
            assert finals[j]["batch_size"] == 3 and finals[j]["attempts"] == 1 and finals[j]["psnr"] > 15
        assert finals[odd_id]["status"] == "succeeded" and finals[odd_id]["batch_size"] == 1
        img = httpx.get(f"{base}/v1/images/{finals[odd_id]['image_id']}").json()
        assert (img["width"], img["height"]) == (40, 32)
        # The partners' own messages were delivered afterwards and did nothing.
        def log() -> str:
            return worker.log.read_text(errors="replace")

        partners = [j for j in same_ids if f"{j}: fitting" not in log()]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(f"job {j} not run: done" in log() for j in partners):
            time.sleep(0.2)
        assert len(partners) == 2 and all(f"job {j} not run: done" in log() for j in partners), log()
    finally:
        for p in reversed(procs):
            p.stop()
