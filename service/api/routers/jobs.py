"""Fit jobs: status and progress (one answer, or a stream of Server-Sent Events), and cancellation."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.records import ACTIVE
from service.settings import Settings

from ..deps import DbDep
from ..problems import ProblemError
from ..schemas import JobOut, JobPage, Problem
from ..security import CallerDep, owned_job
from ..views import job_out

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_STATE = "(active|queued|running|succeeded|failed|cancelled)"
_STATUSES = f"^{_STATE}(,{_STATE})*$"

EVENTS_POLL_S = 0.5  # how often the stream reads the job's record (the worker writes it every heartbeat)
EVENTS_KEEPALIVE_S = 15.0  # a comment line this often, so proxies don't close an idle stream


@router.get("", response_model=JobPage, responses={c: {"model": Problem} for c in (401, 422)})
async def list_jobs(
    db: DbDep, who: CallerDep, response: Response,
    status: Annotated[str, Query(pattern=_STATUSES, description=(
        "comma-separated states; `active` is queued and running (the default)"))] = "active",
    limit: Annotated[int, Query(ge=1, le=100, description="jobs at most")] = 20,
) -> JobPage:
    """The caller's jobs, newest first: by default those still queued or running, so a page reloaded during a
    fit finds it again."""
    wanted = tuple({s for part in status.split(",") for s in (ACTIVE if part == "active" else (part,))})
    rows = await run_in_threadpool(db.list_jobs, who.tenant, wanted, limit)
    response.headers["Cache-Control"] = "no-store"
    return JobPage(items=[job_out(j) for j in rows])


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
    """Progress as Server-Sent Events: the same numbers as GET /v1/jobs/{id}, pushed when they change. A tenant
    has at most TUNER_EVENT_STREAMS_PER_TENANT open at once (429 beyond); a stream ends after
    TUNER_EVENT_STREAM_MAX_S (the client reconnects), and with an `event: error` once its key is revoked
    or its tenant is over the request rate (each TUNER_EVENT_STREAM_RECHECK_S costs a request)."""
    await run_in_threadpool(owned_job, db, job_id, who)  # 404 before the stream starts
    settings, state = request.app.state.settings, request.app.state
    open_streams: Counter[str] | None = getattr(state, "event_streams", None)
    if open_streams is None:
        open_streams = state.event_streams = Counter()
    if open_streams[who.tenant] >= settings.event_streams_per_tenant:
        raise ProblemError(429, f"this tenant has {settings.event_streams_per_tenant} event streams open (its limit)",
                           headers={"Retry-After": "10"})
    open_streams[who.tenant] += 1

    def still_allowed() -> str | None:
        """Why the stream must end now, or None: the key revoked, or the tenant over its request rate."""
        if who.via == "key" and who.key_id and not state.keyring.still_valid(who.key_id):
            return "the API key was revoked"
        limiter = state.limiter
        if limiter is not None and limiter.take(who.tenant if who.via == "key" else f"sse:{who.tenant}") > 0:
            return "over the request rate limit"
        return None

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in _events(job_id, request, db, still_allowed, settings):
                yield chunk
        finally:
            open_streams[who.tenant] -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(job_id: str, request: Request, db: DbDep, still_allowed: Callable[[], str | None],
                  settings: Settings) -> AsyncIterator[str]:
    started = checked = time.monotonic()
    last, quiet_since = None, time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        now = time.monotonic()
        if now - started > settings.event_stream_max_s:
            return
        if now - checked > settings.event_stream_recheck_s:
            checked = now
            why = await run_in_threadpool(still_allowed)
            if why is not None:
                yield f"event: error\ndata: {json.dumps({'detail': why})}\n\n"
                return
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
