"""Issue 24, item 14: `tuner serve` restarts its worker when it is SIGKILLed (uploads then still succeed), and
/readyz tells the truth about workers where the API needs one (TUNER_READY_NEEDS_WORKER, set by serve)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import FAST, Proc, free_port, submit, wait_job, wait_ready


def _workers_of(pid: int) -> set[int]:
    """The `tuner worker` processes started by `pid` (its direct children)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"worker" in cmdline:
            found.add(int(entry.name))
    return found


def _until(cond, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} not within {timeout}s")


def test_serve_restarts_a_killed_worker(tmp_path: Path, parrots_path: Path) -> None:
    port = free_port()
    serve = Proc(["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                 {**FAST, "TUNER_COMPARISONS": "0"}, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, serve, timeout=90)  # ready only once the worker beats
        first = _until(lambda: _workers_of(serve.p.pid), 30, "the worker")
        for pid in first:
            os.killpg(pid, signal.SIGKILL)  # the worker and its fitting children, acking nothing
        again = _until(lambda: _workers_of(serve.p.pid) - first, 30, "a restarted worker")
        assert again and "starting it again" in serve.tail()
        job = submit(base, parrots_path, 30)
        assert wait_job(base, job, timeout=120)[-1]["status"] == "succeeded"
    finally:
        serve.stop()


def test_readyz_needs_a_worker_when_told(tmp_path: Path) -> None:
    env = {**FAST, "TUNER_DATA_DIR": str(tmp_path / "data"), "TUNER_READY_NEEDS_WORKER": "1"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker: Proc | None = None
    try:
        def answer() -> httpx.Response | None:
            try:
                return httpx.get(f"{base}/readyz", timeout=5)
            except httpx.HTTPError:
                return None

        r = _until(answer, 60, "the API")
        assert r.status_code == 503 and r.json()["checks"]["workers"] == "error"
        worker = Proc(["worker", "--concurrency", "1"], env, tmp_path / "worker.log")
        _until(lambda: (a := answer()) is not None and a.status_code == 200, 60, "readiness with a worker")
    finally:
        api.stop()
        if worker is not None:
            worker.kill()
            worker.stop()
