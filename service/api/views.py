"""Records → response models."""

from __future__ import annotations

from service.records import RUNNING, SUCCEEDED, Image, Job

from .schemas import EncodeParams, ImageOut, JobOut, Links


def image_links(image_id: str) -> Links:
    return Links(image=f"/v1/images/{image_id}", weights=f"/v1/images/{image_id}/weights",
                 render=f"/v1/images/{image_id}/render")


def _eta(job: Job) -> float | None:
    """0 once succeeded (also for jobs finished before the column existed), the worker's estimate while
    running, and none otherwise."""
    if job.status == SUCCEEDED:
        return 0.0
    return job.eta_s if job.status == RUNNING else None


def job_out(job: Job) -> JobOut:
    deleted = job.image_deleted_at is not None
    links = image_links(job.image_id) if job.status == SUCCEEDED and not deleted else Links()
    links.job = f"/v1/jobs/{job.id}"
    return JobOut(job_id=job.id, image_id=job.image_id, status=job.status, progress=round(job.progress or 0, 4),
                  step=job.step or 0, steps=job.steps, psnr=job.psnr, error=job.error, attempts=job.attempts or 0,
                  params=EncodeParams(**(job.params or {})), created_at=job.created_at, started_at=job.started_at,
                  finished_at=job.finished_at, batch_size=job.batch_size, eta_s=_eta(job),
                  image_deleted_at=job.image_deleted_at, links=links)


def image_out(img: Image) -> ImageOut:
    links = image_links(img.id)
    if img.job_id:
        links.job = f"/v1/jobs/{img.job_id}"
    return ImageOut(image_id=img.id, width=img.width, height=img.height, channels=img.channels, bytes=img.bytes,
                    bpp=img.bpp, psnr=img.psnr, parameters=img.parameters,
                    params=EncodeParams(**img.params) if img.source == "fit" else None, source=img.source,
                    job_id=img.job_id, blob_sha256=img.blob_digest, created_at=img.created_at, name=img.name,
                    links=links)
