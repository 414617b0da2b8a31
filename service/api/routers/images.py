"""Images: upload one to be fitted (a job), read its record and weights, render it, delete it."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from service.db import ACTIVE, SUCCEEDED, Job, new_job_id
from service.estimate import over_time_limit, planned_steps
from service.storage import BlobNotFound, BlobStore, digest, put_content
from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN
from worker.app import FIT_QUEUE, FIT_TASK

from ..deps import CeleryDep, DbDep, MetricsDep, RendererDep, SettingsDep, StoreDep
from ..problems import ProblemError
from ..render import MEDIA, Fit, Format, plan
from ..schemas import EncodeParams, ImageOut, JobAccepted, Problem
from ..uploads import read_upload
from ..views import image_links, image_out

router = APIRouter(prefix="/v1/images", tags=["images"])
log = logging.getLogger("tuner.api")

IMMUTABLE = "public, max-age=31536000, immutable"
_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "bpp": {"type": "number"}, "psnr": {"type": "number"},
        "steps": {"type": "integer"},
        "effort": {"type": "integer", "minimum": EFFORT_MIN, "maximum": EFFORT_MAX}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/webp": {"schema": {"type": "string", "format": "binary"}}}}}
_ERRORS = {code: {"model": Problem} for code in (400, 404, 413, 415, 422, 429, 503)}


def _sniff(data: bytes, max_pixels: int) -> tuple[int, int, int]:
    """Refuses what is not an image of an accepted kind (415) or can't be decoded or is too large (422).
    Returns the decoded image's width, height and channels."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    from tuner_model.core.errors import ImageError
    from tuner_model.core.image_io import INPUT_FORMATS, load_image

    try:
        with PILImage.open(io.BytesIO(data), formats=INPUT_FORMATS):
            pass
    except UnidentifiedImageError:
        raise ProblemError(415, f"not an image of a supported kind ({', '.join(INPUT_FORMATS)})") from None
    except Exception:  # noqa: BLE001 - anything else is judged by the full decode below
        pass
    try:
        pixels = load_image(data, max_pixels)
    except ImageError as e:
        raise ProblemError(422, str(e)) from None
    return pixels.shape[1], pixels.shape[0], pixels.shape[2]


def batch_key(width: int, height: int, channels: int, canonical_params: str) -> str:
    """Jobs that may share one batched fit: images of one shape fitted with the same parameters."""
    return f"{width}x{height}x{channels}|{canonical_params}"


_PARAM_FIELDS = ("bpp", "psnr", "steps", "effort")


def _params(query: dict[str, float | int | None], fields: dict[str, str], max_steps: int) -> EncodeParams:
    """The encoding parameters from the form fields and the query (the query wins)."""
    raw: dict[str, object] = {k: v for k, v in fields.items() if k in _PARAM_FIELDS}
    raw.update({k: v for k, v in query.items() if v is not None})
    try:
        params = EncodeParams.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise ProblemError(422, f"{where + ': ' if where else ''}{err['msg']}") from None
    if params.steps is not None and params.steps > max_steps:
        raise ProblemError(422, f"steps must be at most {max_steps}")
    return params


@router.post("", response_model=JobAccepted, status_code=202, openapi_extra=_BODY, responses=_ERRORS)
async def upload_image(
    request: Request, response: Response, settings: SettingsDep, db: DbDep, store: StoreDep, celery: CeleryDep,
    metrics: MetricsDep,
    bpp: Annotated[float | None, Query(description="target bits per pixel")] = None,
    psnr: Annotated[float | None, Query(description="target PSNR in dB")] = None,
    steps: Annotated[int | None, Query(description="optimisation steps (advanced)")] = None,
    effort: Annotated[int | None, Query(ge=EFFORT_MIN, le=EFFORT_MAX, description=(
        f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best); the default is a balance"))] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobAccepted:
    """Accepts an image to fit. The same bytes with the same parameters are fitted once: a repeat gets the
    earlier job. An `Idempotency-Key` replays its first answer; reused with another request it is a 422.
    A job whose estimated fit time would run past the workers' time limit is refused (422)."""
    data, fields = await read_upload(request, ("image/",))
    if not data:
        raise ProblemError(400, "empty upload")
    params = _params({"bpp": bpp, "psnr": psnr, "steps": steps, "effort": effort}, fields, settings.max_steps)
    width, height, channels = await run_in_threadpool(_sniff, data, settings.max_image_pixels)
    # Dedupe works on the records, so an upload is stored only when a new job will need it (below).
    upload_digest = await run_in_threadpool(digest, data)
    canonical = json.dumps(params.canonical(), sort_keys=True)
    fingerprint = hashlib.sha256(f"{upload_digest}|{canonical}".encode()).hexdigest()
    image_id = "img_" + fingerprint[:32]

    def accepted(job: Job, dedup: bool) -> JobAccepted:
        metrics.uploads.labels(deduplicated=str(dedup).lower()).inc()
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        response.headers["Cache-Control"] = "no-store"
        links = image_links(job.image_id)
        links.job = f"/v1/jobs/{job.id}"
        return JobAccepted(job_id=job.id, image_id=job.image_id, status=job.status, deduplicated=dedup,
                           width=width, height=height, params=params, links=links)

    if idempotency_key:
        found = await run_in_threadpool(db.get_idempotency, idempotency_key)
        if found is not None:
            if found.fingerprint != fingerprint:
                raise ProblemError(422, "this Idempotency-Key was used with a different request")
            job = await run_in_threadpool(db.get_job, found.job_id)
            if job is not None:
                return accepted(job, True)
    if await run_in_threadpool(db.get_image, image_id) is not None:
        done = await run_in_threadpool(db.latest_job_for_image, image_id, SUCCEEDED)
        if done is not None:
            return accepted(done, True)
    active = await run_in_threadpool(db.active_job_for_image, image_id)
    if active is not None:
        return accepted(active, True)
    # After dedupe (an image already fitted is served whatever its cost), before anything is stored.
    too_long = over_time_limit(width, height, channels, params, settings)
    if too_long is not None:
        raise ProblemError(422, too_long)
    if await run_in_threadpool(db.count_jobs, ACTIVE) >= settings.max_pending_jobs:
        raise ProblemError(429, "too many jobs waiting; retry later", headers={"Retry-After": "30"})

    await run_in_threadpool(put_content, store, "uploads", data)
    job = Job(id=new_job_id(), image_id=image_id, status="queued", progress=0.0, step=0,
              steps=planned_steps(params, settings), params=params.model_dump(), upload_digest=upload_digest,
              attempts=0, cancel_requested=0, created_at=time.time(), sent_at=time.time(),
              batch_key=batch_key(width, height, channels, canonical))
    stored = await run_in_threadpool(db.add_job, job, idempotency_key, fingerprint)
    if stored.id != job.id:
        return accepted(stored, True)
    await run_in_threadpool(_keep_upload, store, upload_digest, data)
    # If this process dies before the message is sent, the job is still safe: it is queued with sent_at set,
    # and a worker's recovery scan sends it once TUNER_RESEND_QUEUED_AFTER_S has passed.
    try:
        await run_in_threadpool(lambda: celery.send_task(FIT_TASK, args=[job.id], queue=FIT_QUEUE))
    except Exception:  # noqa: BLE001 - the broker is down: the job can't run; say so and don't keep it queued
        log.warning("could not queue job %s", job.id, exc_info=True)
        await run_in_threadpool(db.fail_job, job.id, "the queue was unavailable when the job was submitted")
        raise ProblemError(503, "the job queue is unavailable; retry later", headers={"Retry-After": "10"}) from None
    return accepted(job, False)


def _keep_upload(store: BlobStore, upload_digest: str, data: bytes) -> None:
    """The sweeper may have deleted an old identical upload between our put (which only touched it) and the
    job row that now protects it; we still hold the bytes, so put them back before any worker looks."""
    key = f"uploads/{upload_digest}"
    if not store.exists(key):
        log.info("upload %s was swept before its job was saved; storing it again", upload_digest)
        store.put(key, data)


@router.get("/{image_id}", response_model=ImageOut, responses={404: {"model": Problem}})
async def get_image(image_id: str, db: DbDep) -> ImageOut:
    img = await run_in_threadpool(db.get_image, image_id)
    if img is None:
        raise ProblemError(404, f"no image {image_id!r}")
    return image_out(img)


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags


@router.get("/{image_id}/weights", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the blob"}, 304: {"description": "unchanged"},
    404: {"model": Problem}})
async def get_weights(image_id: str, request: Request, db: DbDep, store: StoreDep) -> Response:
    img = await run_in_threadpool(db.get_image, image_id)
    if img is None:
        raise ProblemError(404, f"no image {image_id!r}")
    etag = f'"{img.blob_digest}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    try:
        data = await run_in_threadpool(store.get, f"blobs/{img.blob_digest}")
    except BlobNotFound:
        raise ProblemError(404, f"the weights of {image_id} are missing from storage") from None
    headers["Content-Disposition"] = f'attachment; filename="{image_id}.tnr"'
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/{image_id}/render", response_class=Response, responses={
    200: {"content": {m: {} for m in MEDIA.values()}, "description": "the rendered image"},
    304: {"description": "unchanged"}, **{c: {"model": Problem} for c in (404, 422, 429)}})
async def render_image(
    image_id: str, request: Request, db: DbDep, renderer: RendererDep, settings: SettingsDep, metrics: MetricsDep,
    width: Annotated[int | None, Query(ge=1)] = None,
    height: Annotated[int | None, Query(ge=1)] = None,
    fit: Annotated[Fit, Query(description="with both sides: contain, cover or fill")] = "contain",
    format: Annotated[Format, Query()] = "png",
    quality: Annotated[int | None, Query(ge=1, le=100)] = None,
    crop: Annotated[str | None, Query(description="region left,top,right,bottom in fractions, e.g. 0,0,0.5,0.5")]
    = None,
) -> Response:
    """Renders at any size: one of width/height keeps the aspect ratio; neither is the native size."""
    started = time.perf_counter()
    img = await run_in_threadpool(db.get_image, image_id)
    if img is None:
        raise ProblemError(404, f"no image {image_id!r}")
    p = plan((img.width, img.height), width, height, fit, format, quality, crop, settings)
    key = p.cache_key(img.blob_digest)
    etag = f'"{key[:40]}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Result-Width": str(p.width),
               "X-Result-Height": str(p.height)}
    if _not_modified(request, etag):  # before any storage or rendering work
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(renderer.cached, key)
    cache = "hit"
    if data is None:
        cache = "miss"
        try:
            data = await run_in_threadpool(renderer.render, img.blob_digest, p)
        except BlobNotFound:
            raise ProblemError(404, f"the weights of {image_id} are missing from storage") from None
    metrics.render_seconds.labels(cache=cache).observe(time.perf_counter() - started)
    headers["X-Render-Cache"] = cache
    return Response(data, media_type=MEDIA[p.format], headers=headers)


@router.delete("/{image_id}", status_code=204, response_class=Response, responses={404: {"model": Problem}})
async def delete_image(image_id: str, db: DbDep, store: StoreDep) -> Response:
    img = await run_in_threadpool(db.delete_image, image_id)
    if img is None:
        raise ProblemError(404, f"no image {image_id!r}")
    if not await run_in_threadpool(db.blob_in_use, img.blob_digest):
        await run_in_threadpool(store.delete, f"blobs/{img.blob_digest}")
    return Response(status_code=204)
