"""The classical codecs beside the blob: JPEG, WebP and AVIF files of the upload at no more bytes than the
blob, with their PSNR, made by the worker when the fit ended (service/comparisons.py)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.comparisons import comparison_key
from service.storage import BlobNotFound
from tuner_model.core.classical import MEDIA

from ..deps import DbDep, StoreDep
from ..problems import ProblemError
from ..schemas import ComparisonOut, Comparisons, Problem
from ..security import CallerDep, cache_headers, owned_image

router = APIRouter(prefix="/v1/images", tags=["images"])
Codec = Literal["jpeg", "webp", "avif"]


@router.get("/{image_id}/comparisons", response_model=Comparisons,
            responses={c: {"model": Problem} for c in (401, 404)})
async def list_comparisons(image_id: str, db: DbDep, store: StoreDep, who: CallerDep) -> Comparisons:
    """The blob's bytes and PSNR, each classical codec's at no more bytes (empty for an uploaded blob, or
    when the service makes none), and whether the original upload is still kept (GET .../original)."""
    img = await run_in_threadpool(owned_image, db, image_id, who)
    items = [ComparisonOut(codec=codec, quality=c["quality"], bytes=c["bytes"], psnr=c["psnr"],
                           url=f"/v1/images/{image_id}/comparisons/{codec}")
             for codec, c in sorted((img.comparisons or {}).items())]
    job = await run_in_threadpool(db.get_job, img.job_id) if img.job_id else None
    kept = job is not None and await run_in_threadpool(store.exists, f"uploads/{job.upload_digest}")
    return Comparisons(image_id=image_id, bytes=img.bytes, psnr=img.psnr, items=items,
                       original=f"/v1/images/{image_id}/original" if kept else None)


@router.get("/{image_id}/original", response_class=Response, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "application/octet-stream": {}},
          "description": "the uploaded file, as it was sent"},
    **{c: {"model": Problem} for c in (401, 404)}})
async def get_original(image_id: str, db: DbDep, store: StoreDep, who: CallerDep) -> Response:
    """The upload the image was fitted from, while it is kept (TUNER_UPLOAD_RETENTION_S after its job; 404
    after that, and for blobs uploaded as they are)."""
    img = await run_in_threadpool(owned_image, db, image_id, who)
    job = await run_in_threadpool(db.get_job, img.job_id) if img.job_id else None
    if job is None:
        raise ProblemError(404, f"{image_id} was not fitted from an upload here")
    try:
        data = await run_in_threadpool(store.get, f"uploads/{job.upload_digest}")
    except BlobNotFound:
        raise ProblemError(404, f"the upload of {image_id} is no longer kept") from None
    return Response(data, media_type=_sniff(data),
                    headers={"Cache-Control": "private, no-cache", "Vary": "Authorization"})


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@router.get("/{image_id}/comparisons/{codec}", response_class=Response, responses={
    200: {"content": {m: {} for m in MEDIA.values()}, "description": "the codec's file"},
    **{c: {"model": Problem} for c in (401, 404)}})
async def get_comparison(image_id: str, codec: Codec, request: Request, db: DbDep, store: StoreDep,
                         who: CallerDep) -> Response:
    img = await run_in_threadpool(owned_image, db, image_id, who)
    if codec not in (img.comparisons or {}):
        raise ProblemError(404, f"no {codec} comparison for {image_id}")
    try:
        data = await run_in_threadpool(store.get, comparison_key(image_id, codec))
    except BlobNotFound:
        raise ProblemError(404, f"the {codec} comparison of {image_id} is missing from storage") from None
    return Response(data, media_type=MEDIA[codec], headers=cache_headers(request, who))
