"""`tuner serve`'s embedded worker, kept running: a worker that exits while `serve` runs (SIGKILL, a crash, the
out-of-memory killer) is started again, after a pause that doubles while it keeps dying at once (1 s up to
30 s), and the API's /readyz says 503 while none beats (TUNER_READY_NEEDS_WORKER)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

QUICK_EXIT_S = 30.0  # a worker that lived shorter than this died "at once": the pause before the next doubles


class WorkerSupervisor(threading.Thread):
    def __init__(self, start: Callable[[], subprocess.Popen]) -> None:
        super().__init__(daemon=True, name="worker-supervisor")
        self._start = start
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.proc = start()
        self.restarts = 0

    def run(self) -> None:
        pause, started = 1.0, time.monotonic()
        while True:
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - started
            pause = min(30.0, pause * 2) if lived < QUICK_EXIT_S else 1.0
            print(f"tuner serve: the worker exited ({code}) after {lived:.0f} s; starting it again in {pause:.0f} s",
                  file=sys.stderr, flush=True)
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc, started = self._start(), time.monotonic()
                self.restarts += 1

    def stop(self, timeout: float = 30.0) -> None:
        """Stops supervising, then the worker: a warm shutdown of its main process (which stops its pool
        children itself), SIGKILL to its group after `timeout`."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
