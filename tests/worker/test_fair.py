"""Issue 24, item 9: fair scheduling across tenants. A worker's delivery runs the queued job of the tenant
with the fewest running jobs and served longest ago, so a tenant's backlog doesn't hold the workers. On the
records (real SQLite), then with a real worker process on real Redis: bob's one job, sent after alice's
three, is fitted second, not last."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from test_service_e2e import FAST, Proc, free_port, wait_ready

from service.access.keys import create_key
from service.records import QUEUED, RUNNING, Database, Job
from service.settings import Settings


def _job(db: Database, tenant: str, n: int, at: float) -> Job:
    return db.add_job(Job(id=f"job_{tenant}_{n}", tenant=tenant, image_id=f"img_{tenant}_{n}", status=QUEUED,
                          progress=0.0, step=0, params={}, upload_digest="ab" * 32, attempts=0, cancel_requested=0,
                          created_at=at))


def test_fair_next_job_alternates_tenants(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.sqlite'}")
    for n in range(3):
        _job(db, "alice", n, 100.0 + n)
    _job(db, "bob", 0, 200.0)
    order = []
    for _ in range(4):
        pick = db.fair_next_job(3)
        order.append(pick)
        db.claim_job(pick, "w", 20, 3)  # running now
        db.finish_job(pick, "w", "succeeded")
    assert order == ["job_alice_0", "job_bob_0", "job_alice_1", "job_alice_2"]
    # one running for alice: bob's new job goes first even though alice's waited longer
    _job(db, "alice", 9, 300.0)
    _job(db, "alice", 10, 301.0)
    db.claim_job("job_alice_9", "w", 20, 3)
    assert db.get_job("job_alice_9").status == RUNNING
    _job(db, "bob", 1, 400.0)
    assert db.fair_next_job(3) == "job_bob_1"


def test_a_backlog_does_not_hold_the_worker(redis_url: str, tmp_path: Path, parrots_path: Path) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    data = tmp_path / "data"
    data.mkdir()
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(data), "TUNER_COMPARISONS": "0",
           "TUNER_RATE_LIMIT_PER_S": "0"}
    db = Database(Settings(data_dir=data).resolved_database_url)
    auth = {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in ("alice", "bob")}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker: Proc | None = None
    try:
        wait_ready(base, api)
        png = parrots_path.read_bytes()
        jobs = [httpx.post(f"{base}/v1/images", params={"steps": 30 + n}, headers=auth["alice"], timeout=30,
                           files={"file": ("p.png", png, "image/png")}).json()["job_id"] for n in range(3)]
        jobs.append(httpx.post(f"{base}/v1/images", params={"steps": 30}, headers=auth["bob"], timeout=30,
                               files={"file": ("p.png", png, "image/png")}).json()["job_id"])
        worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = [db.get_job(j) for j in jobs]
            if all(r.status == "succeeded" for r in rows):
                break
            time.sleep(0.5)
        started = sorted(rows, key=lambda r: r.started_at)
        assert [r.tenant for r in started] == ["alice", "bob", "alice", "alice"], [r.id for r in started]
    finally:
        api.stop()
        if worker is not None:
            worker.kill()
            worker.stop()
