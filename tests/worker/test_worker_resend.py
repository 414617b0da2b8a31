"""No accepted job is lost with its broker message. Real Redis, real `tuner api` and `tuner worker`
subprocesses: one job is accepted by the API while no worker runs, and its message is wiped with the
broker's queue (FLUSHDB, which is what a Redis restart without persistence does); another job is saved
without its message ever being sent (the API died between the two). A worker with the default threshold
leaves both waiting; a worker with a short TUNER_RESEND_QUEUED_AFTER_S sends them again and both succeed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from test_service_e2e import FAST, Proc, free_port, wait_job, wait_ready

from service.records import QUEUED, Database, Job, new_job_id
from service.settings import Settings
from service.storage import make_store, put_content


def _wait_log(proc: Proc, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in proc.tail() and time.monotonic() < deadline:
        assert proc.p.poll() is None, proc.tail()
        time.sleep(0.2)
    assert needle in proc.tail(), proc.tail()


def test_queued_jobs_whose_messages_were_lost_are_sent_again(redis_url: str, tmp_path: Path,
                                                            parrots_path: Path) -> None:
    import redis

    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    data_dir = tmp_path / "data"
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(data_dir)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = [Proc(["api", "--port", str(port)], env, tmp_path / "api.log")]
    try:
        wait_ready(base, procs[0])
        r = httpx.post(f"{base}/v1/images", params={"steps": 40}, timeout=30,
                       files={"file": ("p.png", parrots_path.read_bytes(), "image/png")})
        assert r.status_code == 202, r.text
        wiped = r.json()["job_id"]
        assert broker.llen("fit") == 1  # its message is on the queue...
        broker.flushdb()
        assert broker.llen("fit") == 0  # ...and now it is gone, while the job row says queued

        # The crash window: the row was saved, the message never sent.
        settings = Settings(data_dir=data_dir, broker_url=redis_url)
        db = Database(settings.resolved_database_url)
        digest = put_content(make_store(settings), "uploads", parrots_path.read_bytes())
        unsent = new_job_id()
        now = time.time()
        db.add_job(Job(id=unsent, image_id="img_unsent", status=QUEUED, progress=0.0, step=0, steps=30,
                       params={"steps": 30}, upload_digest=digest, attempts=0, cancel_requested=0,
                       created_at=now, sent_at=now))

        # A worker that keeps the default threshold (5 minutes) has nothing to run: both jobs just wait.
        idle = Proc(["worker"], env, tmp_path / "worker-default.log")
        procs.append(idle)
        _wait_log(idle, " ready.")
        time.sleep(3)  # three recovery scans
        for job_id in (wiped, unsent):
            assert httpx.get(f"{base}/v1/jobs/{job_id}").json()["status"] == "queued"
        idle.stop()

        worker = Proc(["worker"], {**env, "TUNER_RESEND_QUEUED_AFTER_S": "2"}, tmp_path / "worker.log")
        procs.append(worker)
        for job_id in (wiped, unsent):
            final = wait_job(base, job_id, timeout=90)[-1]
            assert final["status"] == "succeeded", (final, worker.tail())
            assert final["attempts"] == 1 and final["progress"] == 1.0
            img = httpx.get(f"{base}/v1/images/{final['image_id']}").json()
            assert (img["width"], img["height"]) == (96, 64)
            assert f"job {job_id}: still queued" in worker.log.read_text(errors="replace")
    finally:
        for p in reversed(procs):
            p.stop()


class _OwnRedis:
    """A Redis server of the test's own (no persistence), which the test can restart."""

    def __init__(self, tmp_path: Path) -> None:
        import shutil

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            import os

            import pytest

            if os.environ.get("CI"):
                pytest.fail("redis-server is required in CI")
            pytest.skip("no redis-server binary")
        self.port = free_port()
        self.dir = tmp_path
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        import subprocess

        import redis

        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def test_jobs_lost_with_a_redis_restart_are_sent_again_within_a_minute(tmp_path: Path, parrots_path: Path) -> None:
    """With the default re-send threshold (5 minutes), a queued job whose message a Redis restart wiped is
    sent again as soon as the worker's scan sees the new server."""
    import redis

    own = _OwnRedis(tmp_path)
    own.start()
    data_dir = tmp_path / "data"
    env = {**FAST, "TUNER_BROKER_URL": own.url, "TUNER_DATA_DIR": str(data_dir)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = [Proc(["api", "--port", str(port)], env, tmp_path / "api.log")]
    try:
        wait_ready(base, procs[0])
        worker = Proc(["worker"], env, tmp_path / "worker.log")
        procs.append(worker)
        _wait_log(worker, " ready.")
        png = parrots_path.read_bytes()

        def submit(steps: int) -> str:
            r = httpx.post(f"{base}/v1/images", params={"steps": steps}, timeout=30,
                           files={"file": ("p.png", png, "image/png")})
            assert r.status_code == 202, r.text
            return r.json()["job_id"]

        busy = submit(20000)  # keeps the one worker busy, so the next job's message waits in Redis
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/v1/jobs/{busy}").json()["status"] != "running":
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.1)
        waiting = submit(40)
        assert redis.Redis.from_url(own.url).llen("fit") == 1
        redis.Redis.from_url(own.url).set("before-restart", 1)

        own.stop()  # no persistence: the queue is gone with the server
        own.start()
        answering = time.monotonic()
        # Everything the old server held is gone. (Not checked on the "fit" list itself: the worker's scan,
        # every second, may already have re-sent the job into it before this line runs.)
        assert redis.Redis.from_url(own.url).get("before-restart") is None
        _wait_log(worker, "the broker restarted: sending", timeout=60)
        assert time.monotonic() - answering < 60
        httpx.delete(f"{base}/v1/jobs/{busy}")  # (running or re-queued: either way it makes way)
        final = wait_job(base, waiting, timeout=90)[-1]
        assert final["status"] == "succeeded", (final, worker.tail())
        assert f"job {waiting}: still queued" not in worker.tail()  # not the 5-minute path
    finally:
        for p in reversed(procs):
            p.stop()
        own.stop()
