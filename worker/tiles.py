"""A job fitted as tiles across the workers (issue 28): the job's own delivery fans it out (a Celery group of
one task per tile, service/jobqueue.send_tiles), each tile's task fits that tile alone and stores its
payload, and the task that records the last tile assembles the version-4 blob and settles the job, once.

Where a tile stands lives in its record (service/records/tiles.py), not in a result backend: a tile whose
worker is killed goes back to the queue alone (its message is redelivered, or the recovery scan sends it
again), the tiles already stored are never fitted again, and an assembly that died is run again by the job's
own task. Cancelling the job stops every tile at its next beat, and a tile still queued is never claimed."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from service.estimate import plan_of_job
from service.jobqueue import send_tiles
from service.records import FAILED, SUCCEEDED, ClaimOutcome, HeartbeatState, Job
from service.storage import BlobNotFound
from tuner_model.core.errors import FitCancelled, TunerError
from tuner_model.core.image_io import load_image
from tuner_model.core.stop import stop_when
from tuner_model.rate.allocate import allocated
from tuner_model.rate.tile_plan import TiledPlan
from worker.context import WorkerContext
from worker.store import store_image

if TYPE_CHECKING:
    from tuner_model.core.progress import Progress

log = logging.getLogger("tuner.worker")


def tile_key(job_id: str, tile: int) -> str:
    """Where a fitted tile's payload waits for the assembly: the job's hex id and the tile's index."""
    return f"tiles/{job_id.removeprefix('job_')}{tile:04x}"


def fan_out(ctx: WorkerContext, job: Job, worker: str, plan: TiledPlan, pixels: np.ndarray) -> str:
    """The job's own delivery, for a job fitted as tiles: records its tiles and sends those still to fit as
    a group; when every tile is already fitted (an assembly that died, sent again by the recovery scan),
    assembles the blob here. Returns the job's status as this delivery leaves it."""
    plan = allocated(plan, plan.grid.views(pixels))  # the probe reads each tile once: no copies
    assert plan.budgets is not None
    todo = ctx.db.fan_out(job.id, worker, list(plan.budgets), ctx.settings.stale_after_s)
    if todo is None:
        return "lost"
    if not todo and all(t.status == SUCCEEDED for t in ctx.db.get_tiles(job.id)):
        return assemble_job(ctx, job, plan, pixels)
    send_tiles(ctx.queue, job.id, todo)
    log.info("job %s: %dx%d as %d tiles of %dx%d; sent %s", job.id, plan.width, plan.height, plan.count,
             plan.grid.tile_width, plan.grid.tile_height, todo or "none (all under way)")
    return "running"


class TileBeat(threading.Thread):
    """One tile's link to its records while it is fitted: its liveness and progress (and so its job's) every
    few seconds, and whether to stop (the job cancelled or ended, or the tile taken away)."""

    def __init__(self, ctx: WorkerContext, job_id: str, tile: int, worker: str) -> None:
        super().__init__(daemon=True, name=f"tile-{job_id}-{tile}")
        self.ctx, self.job_id, self.tile, self.worker = ctx, job_id, tile, worker
        self.values: dict[str, Any] = {}
        self.reason: str | None = None
        self._done = threading.Event()

    def progress(self, p: Progress) -> None:
        frac = max(self.values.get("progress", 0.0), min(0.99, p.fraction))
        self.values = {"progress": frac, "step": p.step, "psnr": round(float(p.psnr), 3)}

    def run(self) -> None:
        while not self._done.is_set():
            try:
                state = self.ctx.db.tile_heartbeat(self.job_id, self.tile, self.worker, **self.values)
                if state != HeartbeatState.OK:
                    self.reason = str(state)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the fit goes on
                log.exception("heartbeat failed for tile %d of %s", self.tile, self.job_id)
            self._done.wait(self.ctx.settings.heartbeat_s)

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=5)


def run_tile(ctx: WorkerContext, job_id: str, tile: int, delivery: str) -> dict[str, Any]:
    """One delivery of a tile's task: claim the tile, fit it, store its payload, record it, and assemble the
    blob if it was the last. A failing tile fails its job (with the library's message, or as an internal
    error); a cancelled or lost one stops and records nothing."""
    from worker import fitting  # torch: only in the child that fits

    settings, db = ctx.settings, ctx.db
    worker = f"{socket.gethostname()}:{os.getpid()}:{delivery}"
    state = db.claim_tile(job_id, tile, worker, settings.stale_after_s, settings.max_attempts)
    result: dict[str, Any] = {"job_id": job_id, "tile": tile}
    if state != ClaimOutcome.CLAIMED:
        log.info("job %s: tile %d not run: %s", job_id, tile, state)
        return {**result, "skipped": str(state)}
    started = time.perf_counter()
    log.info("job %s: tile %d claimed by %s", job_id, tile, worker)
    beat = TileBeat(ctx, job_id, tile, worker)
    beat.start()
    try:
        job = db.get_job(job_id)
        assert job is not None
        pixels = load_image(ctx.store.get(f"uploads/{job.upload_digest}"), settings.max_image_pixels)
        plan = plan_of_job(job, pixels.shape, settings)
        budgets = [t.budget for t in db.get_tiles(job_id)]
        if not isinstance(plan, TiledPlan) or plan.count != job.tiles or None in budgets:
            raise TunerError("internal: the job's tile plan changed since it was fanned out")
        plan = plan.with_budgets(budgets)  # type: ignore[arg-type]
        image = plan.grid.tile(pixels, tile)
        with stop_when(lambda: beat.reason):
            (_, outcome), = fitting.fit([image], plan.tile_plan(tile), settings.fit_device,
                                        lambda _i, p: beat.progress(p))
        if outcome.error is not None:
            raise outcome.error
        assert outcome.blob is not None and outcome.fitted is not None
        ctx.store.put(tile_key(job_id, tile), outcome.blob)
        left = db.finish_tile(job_id, tile, worker, bytes=len(outcome.blob), psnr=outcome.fitted.meta.get("psnr"))
        seconds = time.perf_counter() - started
        log.info("job %s: tile %d fitted in %.1fs, %d bytes; %s tiles left", job_id, tile, seconds,
                 len(outcome.blob), "no" if left is None else left)
        result["status"] = "fitted" if left is not None else "lost"
        if left == 0:
            result["job_status"] = assemble_job(ctx, job, plan, pixels)
        return result
    except FitCancelled:
        log.info("job %s: tile %d stopped (%s)", job_id, tile, beat.reason)
        return {**result, "status": str(beat.reason or "cancelled")}
    except SoftTimeLimitExceeded:
        db.finish_tiled_job(job_id, FAILED, error=f"tile {tile} exceeded the time limit of "
                                                  f"{settings.soft_time_limit_s} s", eta_s=None)
        return {**result, "status": "failed"}
    except Exception as e:  # noqa: BLE001 - the job gets a record whatever went wrong
        db.finish_tiled_job(job_id, FAILED, error=_message(job_id, tile, e), eta_s=None)
        return {**result, "status": "failed"}
    finally:
        beat.finish()


def _message(job_id: str, tile: int, e: Exception) -> str:
    if isinstance(e, BlobNotFound):
        return "the uploaded image is missing from storage"
    if isinstance(e, TunerError):
        return str(e)
    log.error("job %s: tile %d failed", job_id, tile, exc_info=e)
    return f"internal error ({type(e).__name__})"


def assemble_job(ctx: WorkerContext, job: Job, plan: TiledPlan, pixels: np.ndarray) -> str:
    """The blob of a job whose tiles are all fitted: their payloads in one version-4 container, stored with
    the image row (worker/store.py) and the job settled; the payloads are then deleted. The job's liveness
    is kept while this runs, so the recovery scan does not start a second assembly."""
    from tuner_model.codec import decode_blob
    from tuner_model.rate.tiles import assemble

    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(ctx.settings.heartbeat_s):
            ctx.db.beat_tiled_job(job.id)

    alive = threading.Thread(target=keep_alive, daemon=True, name=f"assemble-{job.id}")
    alive.start()
    try:
        payloads = [ctx.store.get(tile_key(job.id, k)) for k in range(plan.count)]
        fitted = [decode_blob(p) for p in payloads]
        seconds = time.time() - (job.started_at or time.time())
        tiled, blob = assemble(plan, fitted, payloads, pixels, seconds)  # type: ignore[arg-type]
        psnr = tiled.meta["psnr"]
        digest = store_image(ctx, job, pixels, blob, psnr)
    finally:
        stop.set()
        alive.join(timeout=5)
    settled = ctx.db.finish_tiled_job(job.id, SUCCEEDED, progress=1.0, eta_s=0.0, psnr=psnr,
                                      fit_seconds=round(seconds, 3), batch_size=1)
    log.info("job %s: %d tiles assembled: %d bytes, %.2f dB, blob %s%s", job.id, plan.count, len(blob), psnr,
             digest[:12], "" if settled else " (the job had ended meanwhile)")
    for k in range(plan.count):
        ctx.store.delete(tile_key(job.id, k))
    return str(SUCCEEDED) if settled else "ended"
