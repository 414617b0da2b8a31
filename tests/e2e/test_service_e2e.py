"""End to end over HTTP with real parts: `tuner api` + `tuner worker` subprocesses on real Redis, and
`tuner serve` on its embedded broker. Upload the 96×64 sample, watch the job's progress, fetch the
weights, render at 2×, check size and PSNR; cancel a running fit; restart and find the image again."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tuner_model.codec import decode_blob
from tuner_model.core.metrics import psnr
from tuner_model.rate.effort import DEFAULT_EFFORT

FAST = {  # short heartbeats so that progress, cancellation and recovery show within seconds
    "TUNER_HEARTBEAT_S": "0.3",
    "TUNER_STALE_AFTER_S": "3",
    "TUNER_RECOVERY_INTERVAL_S": "1",
    "TUNER_FIT_DEVICE": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A `tuner ...` subprocess in its own process group (so its Celery children go with it)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen([sys.executable, "-m", "tuner_cli", *args], env={**os.environ, **env},
                                  stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL to the whole group: the worker and its fitting child die at once, acking nothing."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()  # the main process only: a Celery worker stops its pool children itself
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout=30)
        if self.p.poll() is None:
            self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)  # anything left in the group
        self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def api_and_workers(redis_url: str, tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[str, Callable[..., Proc]]]:
    """A running `tuner api` on an emptied Redis; yields its URL and `start(*args, name=...)`, which starts
    more `tuner` processes (workers) with the same environment. Workers are killed at the end (a warm
    shutdown would wait for a fit; they and their queue are throwaway), the API stopped."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(tmp_path / "data"), **env}
    port = free_port()
    procs: list[Proc] = []

    def start(*args: str, name: str) -> Proc:
        p = Proc(list(args), env, tmp_path / f"{name}.log")
        procs.append(p)
        return p

    api = start("api", "--port", str(port), name="api")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        yield base, start
    finally:
        for p in reversed(procs):
            if p is not api:
                p.kill()
            p.stop()


def wait_ready(base: str, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            pytest.fail(f"server exited with {proc.p.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready after {timeout}s:\n{proc.tail()}")


def wait_job(base: str, job_id: str, timeout: float = 90, until: tuple[str, ...] = ("succeeded", "failed",
                                                                                   "cancelled")) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=5).json()
        seen.append(job)
        if job["status"] in until:
            return seen
        time.sleep(0.1)
    pytest.fail(f"job {job_id} still {seen[-1]['status'] if seen else '?'} after {timeout}s")


def submit(base: str, parrots_path: Path, steps: int) -> str:
    """Uploads the sample for a fit of `steps` steps; returns the job id."""
    r = httpx.post(f"{base}/v1/images", params={"steps": steps}, timeout=30,
                   files={"file": ("p.png", parrots_path.read_bytes(), "image/png")})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def wait_fitting(base: str, job_id: str) -> list[dict]:
    """Waits until the job is running and has reported a step: a worker is really fitting it."""
    seen = wait_job(base, job_id, timeout=60, until=("running",))
    while seen[-1]["step"] == 0:
        time.sleep(0.1)  # wait_job answers at once while the job runs: without a pause this loop spins
        seen = wait_job(base, job_id, timeout=30, until=("running",))
    return seen


def encode_and_render(base: str, parrots_path: Path, parrots: np.ndarray, steps: int = 120) -> str:
    """The README's flow: upload, watch, fetch the weights, render at 2×. Returns the image id."""
    r = httpx.post(f"{base}/v1/images", params={"steps": steps}, timeout=30,
                   files={"file": ("parrots.png", parrots_path.read_bytes(), "image/png")})
    assert r.status_code == 202, r.text
    job_id, image_id = r.json()["job_id"], r.json()["image_id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    seen = wait_job(base, job_id)
    final = seen[-1]
    assert final["status"] == "succeeded", final
    assert final["progress"] == 1.0 and final["psnr"] > 20 and final["attempts"] == 1
    assert final["steps"] and final["step"] == final["steps"]  # a finished record says how many steps ran
    assert final["eta_s"] == 0 and final["params"]["effort"] == DEFAULT_EFFORT
    running = [j for j in seen if j["status"] == "running" and 0 < j["progress"] < 1]
    assert running and running[-1]["psnr"] is not None, "no progress was reported while fitting"
    progresses = [j["progress"] for j in running]
    assert progresses == sorted(progresses)
    # The ETA is written with the progress: a number once 2 % is done, never negative.
    for j in running:
        assert j["progress"] < 0.02 or j["eta_s"] is not None, j
        assert j["eta_s"] is None or j["eta_s"] >= 0, j

    info = httpx.get(f"{base}/v1/images/{image_id}", timeout=5).json()
    assert (info["width"], info["height"], info["source"]) == (96, 64, "fit")
    assert info["psnr"] == final["psnr"] and info["bpp"] > 0
    w = httpx.get(f"{base}/v1/images/{image_id}/weights", timeout=5)
    assert w.status_code == 200 and len(w.content) == info["bytes"]
    fitted = decode_blob(w.content)
    assert (fitted.width, fitted.height) == (96, 64)

    big = httpx.get(f"{base}/v1/images/{image_id}/render", params={"width": 192}, timeout=60)
    assert big.status_code == 200, big.text
    assert Image.open(io.BytesIO(big.content)).size == (192, 128)
    native = httpx.get(f"{base}/v1/images/{image_id}/render", timeout=60)
    pixels = np.asarray(Image.open(io.BytesIO(native.content)), dtype=np.float32) / 255
    assert abs(psnr(pixels, parrots) - info["psnr"]) < 0.5
    # 2× is smooth upsampling of the same picture: shrunk back, it is close to the original.
    half = np.asarray(Image.open(io.BytesIO(big.content)).resize((96, 64), Image.BOX), dtype=np.float32) / 255
    assert psnr(half, parrots) > info["psnr"] - 3
    return image_id


@pytest.fixture(scope="module")
def redis_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # the tests' own database number
    tmp = tmp_path_factory.mktemp("redis-stack")
    env = {**FAST, "TUNER_BROKER_URL": redis_url, "TUNER_DATA_DIR": str(tmp / "data")}
    port = free_port()
    api = Proc(["api", "--port", str(port)], env, tmp / "api.log")
    worker = Proc(["worker", "--concurrency", "1"], env, tmp / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        yield base
    finally:
        api.stop()
        worker.stop()


def test_redis_api_and_worker(redis_stack: str, parrots_path: Path, parrots: np.ndarray) -> None:
    image_id = encode_and_render(redis_stack, parrots_path, parrots)
    # The same upload again is not fitted again.
    r = httpx.post(f"{redis_stack}/v1/images", params={"steps": 120}, timeout=30,
                   files={"file": ("p.png", parrots_path.read_bytes(), "image/png")})
    assert r.status_code == 202 and r.json()["deduplicated"] and r.json()["image_id"] == image_id
    metrics = httpx.get(f"{redis_stack}/metrics").text
    assert 'tuner_jobs{state="succeeded"} 1.0' in metrics and "tuner_fit_seconds_count 1.0" in metrics


def test_cancel_running_fit(redis_stack: str, parrots_path: Path) -> None:
    job_id = submit(redis_stack, parrots_path, 20000)
    seen = wait_fitting(redis_stack, job_id)
    # A long fit: within seconds of showing progress it has an ETA (2 % done or 3 s of fitting).
    deadline = time.monotonic() + 15
    while seen[-1]["eta_s"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        seen.append(httpx.get(f"{redis_stack}/v1/jobs/{job_id}", timeout=5).json())
    first = seen[-1]
    assert first["status"] == "running" and first["eta_s"] is not None and first["eta_s"] > 0, first
    t0 = time.monotonic()
    d = httpx.delete(f"{redis_stack}/v1/jobs/{job_id}")
    assert d.status_code == 202
    final = wait_job(redis_stack, job_id, timeout=30)[-1]
    assert final["status"] == "cancelled" and final["error"] == "cancelled" and final["eta_s"] is None
    assert time.monotonic() - t0 < 10 and final["step"] < 20000
    assert httpx.get(f"{redis_stack}/v1/images/{final['image_id']}").status_code == 404


def test_serve_embedded_default_and_restart(tmp_path: Path, parrots_path: Path, parrots: np.ndarray) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in FAST.items()}
    env["TUNER_BROKER_URL"] = ""  # `tuner serve` needs no Redis: its embedded broker is the default
    serve = Proc(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")], env, tmp_path / "serve.log")
    try:
        wait_ready(base, serve)
        image_id = encode_and_render(base, parrots_path, parrots, steps=60)
    finally:
        serve.stop()
    assert serve.p.returncode is not None
    # A restart on the same data dir still has the finished image.
    serve = Proc(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")], env, tmp_path / "serve2.log")
    try:
        wait_ready(base, serve)
        assert httpx.get(f"{base}/v1/images/{image_id}").json()["width"] == 96
        r = httpx.get(f"{base}/v1/images/{image_id}/render", params={"height": 128}, timeout=60)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (192, 128)
    finally:
        serve.stop()


def test_serve_creates_the_fit_queue_before_its_worker_starts(tmp_path: Path) -> None:
    """kombu's SQL transport inserts a queue's row on first use; the worker and the API's first send doing
    it at once crashed the worker on the UNIQUE constraint. `tuner serve` creates the row first (twice is
    harmless), so neither of them inserts it."""
    import sqlite3

    from tuner_cli.serve import _declare_fit_queue

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    _declare_fit_queue(url)
    _declare_fit_queue(url)
    with contextlib.closing(sqlite3.connect(tmp_path / "broker.sqlite")) as db:
        assert db.execute("SELECT name FROM kombu_queue").fetchall() == [("fit",)]
