"""Pause points for tests that must make a race deterministic across processes (a worker between writing a
blob and its image row, say). Off unless TUNER_TEST_PAUSE_DIR names a directory, which no deployment sets.

A test arms a point by creating `<dir>/<point>`; the process reaching it then writes `<dir>/<point>.held` and
waits until the test creates `<dir>/<point>.go` (or removes the arming file), for at most 120 s."""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "TUNER_TEST_PAUSE_DIR"


def pause_point(point: str, timeout_s: float = 120.0) -> None:
    """Waits here while a test holds `point` (see the module's doc); returns at once otherwise."""
    where = os.environ.get(ENV)
    if not where:
        return
    base = Path(where)
    armed = base / point
    if not armed.exists():
        return
    (base / f"{point}.held").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout_s
    while armed.exists() and not (base / f"{point}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
