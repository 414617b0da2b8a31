"""The worker's fitting is a function of the images and the library's request (issue 26): worker/fitting.py
yields one outcome per image, knowing nothing of jobs, records or storage; worker/run.py stores and records
what it yields, each job exactly once.

- `fitting.fit` on the real encoder, no records at all: an outcome per image with its progress by index;
  a broken batched path encodes the images not yet yielded one at a time, under the caller's member check at
  each image's own index (a cancelled one is not fitted again); a single image's error is its outcome; the
  soft time limit propagates.
- `run_fit` in process on real records and storage, with `fitting.fit` replaced by outcomes made up front:
  succeeded, failed with the library's message, cancelled and an internal storing error each settle their
  job once; the soft time limit records every unsettled job as over time.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from test_worker_batch import _crops, _submit

from service.records import CANCELLED, FAILED, SUCCEEDED
from service.settings import Settings
from tuner_model.core.errors import ConfigError, FitCancelled
from tuner_model.core.image_io import load_image
from tuner_model.core.stop import member_check, stop_when
from tuner_model.rate.encode import Outcome
from tuner_model.rate.plan import EncodePlan, resolve
from tuner_model.rate.request import EncodeRequest
from worker import fitting
from worker.context import WorkerContext
from worker.run import run_fit

PLAN = resolve(EncodeRequest(steps=20), 48, 32, 3)  # the crops' shape


@pytest.fixture(scope="module")
def images(parrots: np.ndarray) -> list[np.ndarray]:
    return [load_image(png, 10**7) for png in _crops(parrots)[:3]]


def test_fitting_knows_no_jobs_records_or_storage() -> None:
    tree = ast.parse(Path(fitting.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith(("service.records", "service.storage", "worker."))}


def test_fit_yields_an_outcome_per_image(images: list[np.ndarray]) -> None:
    reports: dict[int, list[Any]] = {}
    got = dict(fitting.fit(images[:2], PLAN, "cpu", lambda i, p: reports.setdefault(i, []).append(p)))
    assert sorted(got) == [0, 1] and sorted(reports) == [0, 1]
    for outcome in got.values():
        assert outcome.error is None and outcome.blob and outcome.fitted.meta["psnr"] > 10
        assert outcome.batch_size in (1, 2)


def test_broken_batch_fits_the_rest_alone_at_their_own_indices(images: list[np.ndarray],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = fitting.iter_encode
    sizes: list[int] = []

    def broken(imgs, *args: Any, **kwargs: Any) -> Iterator[tuple[int, Outcome]]:  # noqa: ANN001
        sizes.append(len(imgs))
        if len(imgs) > 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield from real(imgs, *args, **kwargs)

    monkeypatch.setattr(fitting, "iter_encode", broken)
    asked: list[int] = []

    def cancelled(i: int) -> bool:
        asked.append(i)
        return i == 1

    reports: dict[int, int] = {}
    with stop_when(member=cancelled):
        got = dict(fitting.fit(images, PLAN, "cpu", lambda i, p: reports.__setitem__(i, reports.get(i, 0) + 1)))
    assert sorted(got) == [0, 1, 2]
    assert isinstance(got[1].error, FitCancelled)  # cancelled while the batch ran: not fitted again
    assert all(got[i].blob and got[i].batch_size == 1 for i in (0, 2))
    assert sizes == [3, 1, 1] and set(asked) == {0, 1, 2} and sorted(reports) == [0, 2]


def test_a_single_image_error_is_its_outcome_and_the_time_limit_propagates(
        images: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    def raising(error: BaseException):  # noqa: ANN202
        def encode(*args: Any, **kwargs: Any) -> Iterator[tuple[int, Outcome]]:
            raise error
            yield  # a generator, like the real one

        return encode

    monkeypatch.setattr(fitting, "iter_encode", raising(RuntimeError("boom")))
    [(i, outcome)] = list(fitting.fit(images[:1], PLAN, "cpu"))
    assert i == 0 and isinstance(outcome.error, RuntimeError)
    monkeypatch.setattr(fitting, "iter_encode", raising(SoftTimeLimitExceeded()))
    for k in (1, 3):
        with pytest.raises(SoftTimeLimitExceeded):
            list(fitting.fit(images[:k], PLAN, "cpu"))


# run.py records what fitting yields ------------------------------------------------------------------------
@pytest.fixture()
def ctx(tmp_path: Path) -> WorkerContext:
    settings = Settings(data_dir=tmp_path / "data", fit_device="cpu", fit_batch_on_cpu=True, heartbeat_s=0.1,
                        stale_after_s=5.0, fair_scheduling=False, comparisons=False)
    settings.data_dir.mkdir(parents=True)
    return WorkerContext(settings)


@pytest.fixture(scope="module")
def made(images: list[np.ndarray]) -> Outcome:
    """One real outcome, its blob stored for each job below (content-addressed: one file)."""
    [(_, outcome)] = list(fitting.fit(images[:1], PLAN, "cpu"))
    return outcome


def _spy_finishes(ctx: WorkerContext) -> dict[str, list[str]]:
    finishes: dict[str, list[str]] = {}
    real = ctx.db.finish_job
    lock = threading.Lock()

    def spy(job_id: str, worker: str, status: str, **values: Any) -> Any:
        with lock:
            finishes.setdefault(job_id, []).append(str(status))
        return real(job_id, worker, status, **values)

    ctx.db.finish_job = spy  # type: ignore[method-assign]
    return finishes


def test_run_settles_each_outcome_once(ctx: WorkerContext, parrots: np.ndarray, made: Outcome,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(_crops(parrots))]
    seen: dict[str, Any] = {}

    def fake_fit(images: list[np.ndarray], plan: EncodePlan, device: str, progress: Any = None):  # noqa: ANN202
        seen.update(n=len(images), steps=plan.request.steps, member=member_check())
        yield 2, Outcome(error=ConfigError("the budget is too small"), batch_size=4)
        yield 0, Outcome(made.fitted, made.blob, batch_size=4)
        yield 3, Outcome(made.fitted, made.blob, batch_size=4)  # storing it fails
        yield 1, Outcome(error=FitCancelled("cancelled"), batch_size=4)

    def store(ctx_: WorkerContext, job: Any, *args: Any) -> str:
        if job.id == ids[3]:
            raise OSError("disk full")
        return real_store(ctx_, job, *args)

    import worker.run as run_mod

    real_store = run_mod.store_image
    monkeypatch.setattr(fitting, "fit", fake_fit)
    monkeypatch.setattr(run_mod, "store_image", store)
    finishes = _spy_finishes(ctx)
    out = run_fit(ctx, ids[0], "d")
    assert out["status"] == SUCCEEDED and out["batch"] == ids
    assert seen["n"] == 4 and seen["steps"] == 30 and seen["member"] is not None  # the job's request, a check
    jobs = [ctx.db.get_job(j) for j in ids]
    assert (jobs[0].status, jobs[0].batch_size, jobs[0].progress) == (SUCCEEDED, 4, 1.0)
    assert ctx.db.get_image(jobs[0].image_id).bytes == len(made.blob)
    assert (jobs[1].status, jobs[1].error) == (CANCELLED, "cancelled")
    assert (jobs[2].status, jobs[2].error) == (FAILED, "the budget is too small")
    assert (jobs[3].status, jobs[3].error) == (FAILED, "internal error (OSError)")
    assert all(ctx.db.get_image(j.image_id) is None for j in jobs[1:])
    assert finishes == {j: [s] for j, s in zip(ids, (SUCCEEDED, CANCELLED, FAILED, FAILED), strict=True)}


def test_the_time_limit_records_every_unsettled_job(ctx: WorkerContext, parrots: np.ndarray, made: Outcome,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [_submit(ctx, png, created_ago=10 - i) for i, png in enumerate(_crops(parrots)[:3])]

    def fake_fit(images: list[np.ndarray], plan: EncodePlan, device: str, progress: Any = None):  # noqa: ANN202
        yield 1, Outcome(made.fitted, made.blob, batch_size=3)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(fitting, "fit", fake_fit)
    finishes = _spy_finishes(ctx)
    run_fit(ctx, ids[0], "d")
    jobs = [ctx.db.get_job(j) for j in ids]
    assert jobs[1].status == SUCCEEDED
    assert all(j.status == FAILED and "time limit" in j.error for j in (jobs[0], jobs[2]))
    assert finishes == {j: [s] for j, s in zip(ids, (FAILED, SUCCEEDED, FAILED), strict=True)}
