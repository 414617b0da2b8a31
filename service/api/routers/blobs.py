"""Uploading a blob made elsewhere (`tuner encode`): it becomes an image that renders like any other."""

from __future__ import annotations

import hashlib
import time

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.records import Image
from service.storage import digest, put_content

from ..deps import DbDep, StoreDep
from ..problems import ProblemError
from ..schemas import ImageOut, Problem
from ..uploads import read_upload
from ..views import image_out

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


def blob_image_id(blob_digest: str) -> str:
    return "img_" + hashlib.sha256(f"blob:{blob_digest}".encode()).hexdigest()[:32]


def _validate(data: bytes):  # noqa: ANN202
    from tuner_model.codec import decode_blob, read_info
    from tuner_model.core.errors import TunerError

    try:
        info = read_info(data)
        decode_blob(data)  # the header alone can't vouch for the tensors
    except TunerError as e:
        raise ProblemError(422, f"not a valid blob: {e}") from None
    return info


@router.post("", response_model=ImageOut, status_code=201, openapi_extra=_BODY,
             responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem},
                        422: {"model": Problem}})
async def upload_blob(request: Request, db: DbDep, store: StoreDep, response: Response) -> ImageOut:
    data, _ = await read_upload(request, ("application/octet-stream", "application/vnd.tuner"))
    if not data:
        raise ProblemError(400, "empty body")
    info = await run_in_threadpool(_validate, data)
    image_id = blob_image_id(digest(data))
    blob_digest = await run_in_threadpool(put_content, store, "blobs", data)
    img = await run_in_threadpool(db.add_image, Image(
        id=image_id, width=info.width, height=info.height, channels=info.channels, bytes=len(data),
        bpp=round(info.bpp, 5), psnr=info.meta.get("psnr") if isinstance(info.meta.get("psnr"), int | float) else None,
        parameters=info.parameters, params={}, blob_digest=blob_digest, source="upload", job_id=None,
        created_at=time.time()))
    response.headers["Location"] = f"/v1/images/{image_id}"
    return image_out(img)
