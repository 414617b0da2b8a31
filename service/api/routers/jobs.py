"""Fit jobs: status and progress (one answer, or a stream of Server-Sent Events), and cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.records import ACTIVE

from ..deps import DbDep
from ..problems import ProblemError
from ..schemas import JobOut, Problem
from ..security import CallerDep, owned_job
from ..views import job_out

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

EVENTS_POLL_S = 0.5  # how often the stream reads the job's record (the worker writes it every heartbeat)
EVENTS_KEEPALIVE_S = 15.0  # a comment line this often, so proxies don't close an idle stream


@router.get("/{job_id}", response_model=JobOut, responses={c: {"model": Problem} for c in (401, 404)})
async def get_job(job_id: str, db: DbDep, response: Response, who: CallerDep) -> JobOut:
    job = await run_in_threadpool(owned_job, db, job_id, who)
    response.headers["Cache-Control"] = "no-store"
    return job_out(job)


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "`event: job` with the job (as GET /v1/jobs/{id}) each time it changes; the stream ends "
                         "once the job has finished, failed or been cancelled"},
    **{c: {"model": Problem} for c in (401, 404)}})
async def job_events(job_id: str, request: Request, db: DbDep, who: CallerDep) -> StreamingResponse:
    """Progress as Server-Sent Events: the same numbers as GET /v1/jobs/{id}, pushed when they change."""
    await run_in_threadpool(owned_job, db, job_id, who)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        last, quiet_since = None, time.monotonic()
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            job = await run_in_threadpool(db.get_job, job_id)
            if job is None:  # deleted meanwhile
                return
            body = job_out(job).model_dump_json()
            if body != last:
                last, quiet_since = body, time.monotonic()
                yield f"event: job\nid: {job.step or 0}\ndata: {body}\n\n"
                if job.status not in ACTIVE:
                    return
            elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(EVENTS_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.delete("/{job_id}", response_model=JobOut, status_code=202,
               responses={c: {"model": Problem} for c in (401, 404, 409)})
async def cancel_job(job_id: str, db: DbDep, response: Response, who: CallerDep) -> JobOut:
    """Cancels a job: a queued job at once, a running one within a heartbeat (poll the job or its events)."""
    job = await run_in_threadpool(owned_job, db, job_id, who)
    if job.status not in ACTIVE:
        raise ProblemError(409, f"job {job_id} is already {job.status}")
    job = await run_in_threadpool(db.request_cancel, job_id)
    assert job is not None
    response.headers["Cache-Control"] = "no-store"
    return job_out(job)
