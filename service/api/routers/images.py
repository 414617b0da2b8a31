"""Images: upload one to be fitted (a job), read its record and weights, render it, delete it."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.access.signing import KID, VER, sign
from service.deletion import forget_image
from service.storage import BlobNotFound
from service.submit import SubmitRefused, Upload, submit_upload
from tuner_model.core.tiling import tile_grid
from tuner_model.rate.request import field_schemas

from ..deps import DbDep, MetricsDep, RendererDep, ServicesDep, SettingsDep, StoreDep
from ..problems import ProblemError
from ..queries import EncodeQuery, RenderQuery, encode_params, encode_values, render_query, render_url_query
from ..render import MEDIA, check_work, negotiate, plan, render_prefix
from ..schemas import EncodeParams, ImageOut, ImagePage, JobAccepted, Problem, SignedUrl
from ..security import CallerDep, RenderCallerDep, cache_headers, image_version, owned_image
from ..uploads import image_header, read_upload, upload_name
from ..views import image_links, image_out

router = APIRouter(prefix="/v1/images", tags=["images"])
log = logging.getLogger("tuner.api")

_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1}, **field_schemas(),
        "name": {"type": "string", "maxLength": 200, "description": "a name for people (default: the file's)"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
    "image/webp": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}}}
_ERRORS = {code: {"model": Problem} for code in (400, 403, 413, 415, 422, 429, 503)}  # 403: the storage quota


@router.post("", response_model=JobAccepted, status_code=202, openapi_extra=_BODY, responses=_ERRORS)
async def upload_image(
    request: Request, response: Response, services: ServicesDep, query: Annotated[EncodeQuery, Query()],
    who: CallerDep, idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    name: Annotated[str | None, Query(max_length=200, description=(
        "a name for people, shown in the gallery (default: the uploaded file's)"))] = None,
) -> JobAccepted:
    """Accepts an image to fit. The same bytes with the same parameters are fitted once: a repeat gets the
    earlier job. An `Idempotency-Key` replays its first answer; reused with another request it is a 422.
    A job whose estimated fit time would run past the workers' time limit is refused (422)."""
    settings = services.settings
    data, fields = await read_upload(request, ("image/",))
    if not data:
        raise ProblemError(400, "empty upload")
    params = encode_params({**{k: v for k, v in fields.items() if k in EncodeParams.model_fields},
                            **encode_values(query)}, settings.max_steps)
    width, height, channels = await run_in_threadpool(image_header, data, settings.max_image_pixels)
    upload = Upload(data, width, height, channels, params, idempotency_key, who.tenant,
                    upload_name(name, fields.get("name")))
    try:
        done = await run_in_threadpool(submit_upload, upload, settings, services.db, services.store, services.celery)
    except SubmitRefused as e:
        raise ProblemError(e.status, e.detail, headers=e.headers, problem=e.problem) from None
    services.metrics.uploads.labels(deduplicated=str(done.deduplicated).lower()).inc()
    response.headers["Location"] = f"/v1/jobs/{done.job.id}"
    response.headers["Cache-Control"] = "no-store"
    links = image_links(done.job.image_id)
    links.job = f"/v1/jobs/{done.job.id}"
    return JobAccepted(job_id=done.job.id, image_id=done.job.image_id, status=done.job.status,
                       deduplicated=done.deduplicated, width=width, height=height, params=params,
                       tiles=tile_grid(width, height, settings.tile_working_size).count, eta_s=done.job.eta_s,
                       links=links)


def _cursor(img) -> str:  # noqa: ANN001
    return base64.urlsafe_b64encode(f"{img.created_at!r}|{img.id}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[float, str] | None:
    if cursor is None:
        return None
    try:
        t, i = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|", 1)
        return float(t), i
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(422, "cursor: not a cursor this API gave out") from None


@router.get("", response_model=ImagePage, responses={c: {"model": Problem} for c in (401, 422)})
async def list_images(
    db: DbDep, who: CallerDep, response: Response,
    limit: Annotated[int, Query(ge=1, le=100, description="images per page")] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="`next` from the previous page")] = None,
) -> ImagePage:
    """The caller's images, newest first, a page at a time."""
    rows = await run_in_threadpool(db.list_images, who.tenant, limit + 1, _after(cursor))
    response.headers["Cache-Control"] = "no-store"
    page = rows[:limit]
    return ImagePage(items=[image_out(i) for i in page], next=_cursor(page[-1]) if len(rows) > limit else None)


@router.get("/{image_id}", response_model=ImageOut, responses={404: {"model": Problem}})
async def get_image(image_id: str, db: DbDep, who: CallerDep) -> ImageOut:
    return image_out(await run_in_threadpool(owned_image, db, image_id, who))


def _not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags


@router.get("/{image_id}/weights", response_class=Response, responses={
    200: {"content": {"application/octet-stream": {}}, "description": "the blob"}, 304: {"description": "unchanged"},
    404: {"model": Problem}})
async def get_weights(image_id: str, request: Request, db: DbDep, store: StoreDep, who: CallerDep) -> Response:
    img = await run_in_threadpool(owned_image, db, image_id, who)
    etag = f'"{img.blob_digest}"'
    headers = {"ETag": etag, **cache_headers(request, who)}
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
    304: {"description": "unchanged"}, **{c: {"model": Problem} for c in (401, 403, 404, 422, 429, 503)}})
async def render_image(
    image_id: str, request: Request, db: DbDep, renderer: RendererDep, settings: SettingsDep, metrics: MetricsDep,
    who: RenderCallerDep, q: Annotated[RenderQuery, Depends(render_query)],
) -> Response:
    """Renders at any size: one of width/height keeps the aspect ratio; neither is the native size. With URL
    signing on, a signed URL (`sig`, optional `exp`) renders without an API key."""
    started = time.perf_counter()
    img = await run_in_threadpool(owned_image, db, image_id, who)
    if who.via == "signature" and request.query_params.get(VER, image_version(img)) != image_version(img):
        raise ProblemError(404, f"no image {image_id!r}")  # deleted (and made again) since the URL was signed
    # What a signed URL answers is fixed by what was signed: `auto` is not negotiated from the holder's Accept.
    fmt = negotiate(q.format, None if who.via == "signature" else request.headers.get("accept"))
    p = plan((img.width, img.height), q.ask, fmt, settings)
    cost = await run_in_threadpool(renderer.cost, img.blob_digest, img.parameters)  # a tiled blob: by tile
    check_work(p, cost, settings)  # the same answer whether or not the render is cached
    key = p.cache_key(img.blob_digest, image_id)  # the image's own cache: no oracle across tenants
    etag = f'"{key[16:56]}"'
    headers = {"ETag": etag, **cache_headers(request, who), "X-Result-Width": str(p.width),
               "X-Result-Height": str(p.height)}
    if q.format == "auto":
        headers["Vary"] = ", ".join(v for v in (headers.get("Vary"), "Accept") if v)
    if _not_modified(request, etag):  # before any storage or rendering work
        return Response(status_code=304, headers=headers)
    data = await run_in_threadpool(renderer.cached, key)
    cache = "hit"
    if data is None:
        cache = "miss"
        data = await _render(request, renderer, img.blob_digest, p, image_id, key)
    metrics.render_seconds.labels(cache=cache).observe(time.perf_counter() - started)
    headers["X-Render-Cache"] = cache
    return Response(data, media_type=MEDIA[p.format], headers=headers)


async def _render(request: Request, renderer, blob_digest: str, p, image_id: str,  # noqa: ANN001
                  key: str) -> bytes:
    """Waits for the render (shared with identical concurrent requests) while watching for the client to go:
    a render nobody waits for any more stops at its next tile."""
    gone = threading.Event()
    result = renderer.submit(blob_digest, p, gone, key)

    async def watch() -> None:
        while not gone.is_set():
            if await request.is_disconnected():
                gone.set()
                return
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.shield(asyncio.wrap_future(result))
    except BlobNotFound:
        raise ProblemError(404, f"the weights of {image_id} are missing from storage") from None
    finally:
        gone.set()  # this request no longer waits (answered, failed, or its task cancelled)
        watcher.cancel()


@router.get("/{image_id}/render-url", response_model=SignedUrl, responses={
    c: {"model": Problem} for c in (401, 404, 409, 422)})
async def render_url(
    image_id: str, request: Request, db: DbDep, renderer: RendererDep, settings: SettingsDep, who: CallerDep,
    q: Annotated[RenderQuery, Depends(render_url_query)],
) -> SignedUrl:
    """A signed URL for this render, to embed in a page without a key (URL signing must be configured). It
    expires (by default after TUNER_SIGNED_URL_TTL_S), and dies with the API key that minted it and with the
    image (a re-upload of the same bytes is a new version); `format=auto` is settled now, from this request's
    Accept header, so whoever holds the URL can't pick another format."""
    img = await run_in_threadpool(owned_image, db, image_id, who)
    keys = settings.signing_key_bytes
    if not keys:
        raise ProblemError(409, "URL signing is not configured on this service (TUNER_SIGNING_KEYS)")
    ttl = settings.signed_url_ttl_s if q.expires_in is None else q.expires_in
    if ttl > settings.signed_url_max_ttl_s:
        raise ProblemError(422, f"expires_in: at most {settings.signed_url_max_ttl_s} s (TUNER_SIGNED_URL_MAX_TTL_S)")
    fmt = negotiate(q.format, request.headers.get("accept"))
    p = plan((img.width, img.height), q.ask, fmt, settings)
    cost = await run_in_threadpool(renderer.cost, img.blob_digest, img.parameters)
    check_work(p, cost, settings)  # never sign a URL that can only be refused
    params = {**q.render_params(), "format": fmt, VER: image_version(img), **({KID: who.key_id} if who.key_id else {})}
    now = time.time()
    url = sign(f"/v1/images/{image_id}/render?{urlencode(params)}", keys, ttl, now)
    return SignedUrl(url=url, expires_at=int(now + ttl))


@router.delete("/{image_id}", status_code=204, response_class=Response, responses={404: {"model": Problem}})
async def delete_image(image_id: str, db: DbDep, store: StoreDep, settings: SettingsDep, who: CallerDep) -> Response:
    """Deletes the image and what it left: its blob (unless another image has the same bytes), comparison
    files, cached renders and original (unless another job keeps it); its jobs are marked."""
    await run_in_threadpool(owned_image, db, image_id, who)
    # The blob goes only when no image references it, decided under the blob's lock, which a writer
    # referencing it takes too (service/records/images.py): a shared blob is never taken from under one.
    img = await run_in_threadpool(db.delete_image_and_blob, image_id, lambda d: store.delete(f"blobs/{d}"))
    if img is None:  # deleted by a concurrent request meanwhile
        raise ProblemError(404, f"no image {image_id!r}")
    await run_in_threadpool(forget_image, db, store, settings, img, render_prefix(image_id))
    return Response(status_code=204)
