"""Images: upload one to be fitted (a job), read its record and weights, render it, delete it."""

from __future__ import annotations

import io
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from service.storage import BlobNotFound
from service.submit import SubmitRefused, Upload, submit_upload
from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN

from ..deps import DbDep, MetricsDep, RendererDep, ServicesDep, SettingsDep, StoreDep
from ..problems import ProblemError
from ..queries import EncodeQuery, RenderQuery
from ..render import MEDIA, plan
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
    request: Request, response: Response, services: ServicesDep, query: Annotated[EncodeQuery, Depends()],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobAccepted:
    """Accepts an image to fit. The same bytes with the same parameters are fitted once: a repeat gets the
    earlier job. An `Idempotency-Key` replays its first answer; reused with another request it is a 422.
    A job whose estimated fit time would run past the workers' time limit is refused (422)."""
    settings = services.settings
    data, fields = await read_upload(request, ("image/",))
    if not data:
        raise ProblemError(400, "empty upload")
    params = _params(query.values, fields, settings.max_steps)
    width, height, channels = await run_in_threadpool(_sniff, data, settings.max_image_pixels)
    upload = Upload(data, width, height, channels, params, idempotency_key)
    try:
        done = await run_in_threadpool(submit_upload, upload, settings, services.db, services.store, services.celery)
    except SubmitRefused as e:
        raise ProblemError(e.status, e.detail, headers=e.headers) from None
    services.metrics.uploads.labels(deduplicated=str(done.deduplicated).lower()).inc()
    response.headers["Location"] = f"/v1/jobs/{done.job.id}"
    response.headers["Cache-Control"] = "no-store"
    links = image_links(done.job.image_id)
    links.job = f"/v1/jobs/{done.job.id}"
    return JobAccepted(job_id=done.job.id, image_id=done.job.image_id, status=done.job.status,
                       deduplicated=done.deduplicated, width=width, height=height, params=params, links=links)


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
    q: Annotated[RenderQuery, Depends()],
) -> Response:
    """Renders at any size: one of width/height keeps the aspect ratio; neither is the native size."""
    started = time.perf_counter()
    img = await run_in_threadpool(db.get_image, image_id)
    if img is None:
        raise ProblemError(404, f"no image {image_id!r}")
    p = plan((img.width, img.height), q.width, q.height, q.fit, q.format, q.quality, q.crop, settings)
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
