"""A job's progress and ETA as the worker reports them: the ETA rule; the heartbeat's first beat at once and
a fit's step 0 written without waiting for the interval; and `run_fit` in process on real records, storage
and encoder (a tiny image): the effort reaches the encoder, a running job's ETA is written with its
progress, and a succeeded job's ETA is 0."""

from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.estimate import plan_of_job
from service.records import QUEUED, SUCCEEDED, Job
from service.settings import Settings
from service.storage import put_content
from tuner_model.core.progress import Progress
from tuner_model.rate.effort import DEFAULT_EFFORT
from worker.context import WorkerContext
from worker.heartbeat import Heartbeat as _Heartbeat
from worker.heartbeat import JobProgress as _JobProgress
from worker.heartbeat import eta_seconds
from worker.run import run_fit


def test_eta_rule() -> None:
    assert eta_seconds(1.0, 0.0) is None
    assert eta_seconds(1.0, 0.01) is None  # under 2 % and under 3 s: too little to go on
    assert eta_seconds(1.0, 0.02) == pytest.approx(49.0)
    assert eta_seconds(3.0, 0.01) == pytest.approx(297.0)  # 3 s of fitting is enough on its own
    assert eta_seconds(10.0, 0.5) == pytest.approx(10.0)
    assert eta_seconds(10.0, 0.99) == pytest.approx(0.1)
    assert eta_seconds(10.0, 1.0) == 0.0


class _Rows:
    """Stands in for the records: keeps every heartbeat write."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str, dict[str, Any]]] = []
        self.written = threading.Event()

    def heartbeat(self, job_id: str, worker: str, **values: Any) -> str:
        self.writes.append((time.monotonic(), job_id, values))
        self.written.set()
        return "ok"


def _wait_for(rows: _Rows, pred, timeout: float = 2.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, _, values in list(rows.writes):
            if pred(values):
                return values
        time.sleep(0.01)
    pytest.fail(f"no heartbeat write like that within {timeout}s: {rows.writes}")


def test_first_beat_at_once_and_step_zero_without_waiting(tmp_path: Path) -> None:
    rows = _Rows()
    ctx = SimpleNamespace(db=rows, settings=Settings(data_dir=tmp_path, heartbeat_s=60.0, stale_after_s=300.0))
    hb = _Heartbeat(ctx, ["job_a"], "w")  # type: ignore[arg-type]
    t0 = time.monotonic()
    hb.start()
    try:
        assert rows.written.wait(2.0) and rows.writes[0][0] - t0 < 2.0  # liveness at once, not after 60 s
        progress = _JobProgress(hb, "job_a")
        progress.start(120)
        first = _wait_for(rows, lambda v: v.get("step") == 0)  # the fit began: written at once
        assert first == {"progress": 0.0, "step": 0, "steps": 120, "eta_s": None}
        # Halfway after 10 s (the clock moved back by hand): the next beat says about 10 s are left.
        progress.started = time.monotonic() - 10.0
        progress(Progress("fit", 60, 120, 0.01, 25.0))
        hb.beat()
        last = rows.writes[-1][2]
        assert last["step"] == 60 and last["progress"] == 0.5 and last["eta_s"] == pytest.approx(10.0, abs=0.5)
        hb.release("job_a")
        n = len(rows.writes)
        hb.beat()
        assert len(rows.writes) == n  # a released (settled) job is not written again
    finally:
        hb.finish()
    assert not hb.is_alive()


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def ctx(tmp_path: Path) -> WorkerContext:
    settings = Settings(data_dir=tmp_path / "data", fit_device="cpu", heartbeat_s=0.05, stale_after_s=5.0)
    settings.data_dir.mkdir(parents=True)
    return WorkerContext(settings)


def _queue(ctx: WorkerContext, png: bytes, params: dict[str, Any]) -> str:
    job_id = "job_" + uuid.uuid4().hex
    ctx.db.add_job(Job(id=job_id, image_id="img_" + uuid.uuid4().hex[:16], status=QUEUED, progress=0.0, step=0,
                       params=params, upload_digest=put_content(ctx.store, "uploads", png), attempts=0,
                       cancel_requested=0, created_at=time.time(), sent_at=time.time()))
    return job_id


def test_effort_reaches_the_encoder(ctx: WorkerContext) -> None:
    job = Job(id="j", params={"bpp": None, "psnr": None, "steps": None, "effort": 7})
    assert plan_of_job(job, (32, 48, 3), ctx.settings).request.effort == 7
    older = plan_of_job(Job(id="j", params={"steps": 30}), (32, 48, 3), ctx.settings)  # queued before effort existed
    assert older.request.effort == DEFAULT_EFFORT and older.request.steps == 30
    assert older.total_steps > 30  # the float fit's steps and the fine-tuning's


def test_run_fit_writes_the_eta_and_zero_when_done(ctx: WorkerContext, parrots: np.ndarray) -> None:
    writes: list[dict[str, Any]] = []
    real = ctx.db.heartbeat

    def spy(job_id: str, worker: str, **values: Any) -> str:
        writes.append(values)
        return real(job_id, worker, **values)

    ctx.db.heartbeat = spy  # type: ignore[method-assign]
    job_id = _queue(ctx, _png(parrots[:32, :48]), {"bpp": None, "psnr": None, "steps": 60, "effort": 2})
    out = run_fit(ctx, job_id, "d")
    assert out["status"] == SUCCEEDED, out
    job = ctx.db.get_job(job_id)
    assert job.status == SUCCEEDED and job.eta_s == 0.0 and job.progress == 1.0
    with_progress = [w for w in writes if "progress" in w]
    assert with_progress and all("eta_s" in w for w in with_progress)
    for w in with_progress:  # an estimate as soon as 2 % is done (earlier after 3 s), never negative
        assert w["progress"] < 0.02 or w["eta_s"] is not None, w
        assert w["eta_s"] is None or w["eta_s"] >= 0, w
    assert any(w["eta_s"] is not None for w in with_progress), writes
