"""Fit jobs: status and progress, and cancellation."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from service.records import ACTIVE

from ..deps import DbDep
from ..problems import ProblemError
from ..schemas import JobOut, Problem
from ..security import CallerDep, owned_job
from ..views import job_out

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut, responses={c: {"model": Problem} for c in (401, 404)})
async def get_job(job_id: str, db: DbDep, response: Response, who: CallerDep) -> JobOut:
    job = await run_in_threadpool(owned_job, db, job_id, who)
    response.headers["Cache-Control"] = "no-store"
    return job_out(job)


@router.delete("/{job_id}", response_model=JobOut, status_code=202,
               responses={404: {"model": Problem}, 409: {"model": Problem}})
async def cancel_job(job_id: str, db: DbDep, response: Response, who: CallerDep) -> JobOut:
    """Cancels a job: a queued job at once, a running one at its fit loop's next step (poll the job)."""
    job = await run_in_threadpool(owned_job, db, job_id, who)
    if job.status not in ACTIVE:
        raise ProblemError(409, f"job {job_id} is already {job.status}")
    job = await run_in_threadpool(db.request_cancel, job_id)
    assert job is not None
    response.headers["Cache-Control"] = "no-store"
    return job_out(job)
