"""Uploading a blob made elsewhere (`tuner encode`): it becomes an image that renders like any other."""

from __future__ import annotations

import hashlib
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.records import Image
from service.settings import Settings
from service.storage import digest, ensure_content, put_content
from service.submit import SubmitRefused, check_quota, tenant_scoped
from service.testhooks import pause_point

from ..deps import DbDep, SettingsDep, StoreDep
from ..problems import ProblemError
from ..schemas import ImageOut, Problem
from ..security import CallerDep
from ..uploads import read_upload, upload_name
from ..views import image_out

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1},
        "name": {"type": "string", "maxLength": 200, "description": "a name for people (default: the file's)"}}}}}}}


# The fewest bits per parameter a blob may spend. Our encoder's blobs measured 5.5-6.5 (parrots 96x64 at
# 0.25-64 bpp, a flat image too); a floor of 2 leaves a wide margin for other encoders' entropy models.
MIN_BITS_PER_PARAMETER = 2.0


def blob_image_id(blob_digest: str, tenant: str) -> str:
    return "img_" + hashlib.sha256(tenant_scoped(tenant, f"blob:{blob_digest}").encode()).hexdigest()[:32]


def _invalid(detail: str) -> ProblemError:
    return ProblemError(422, detail, problem="invalid-blob")


def _validate(data: bytes, settings: Settings):  # noqa: ANN202
    """The blob's header is checked against what this service would make before its tensors are decoded: a
    hostile blob (a huge network, or a size no upload could have) is refused before it costs anything."""
    from tuner_model.codec import decode_blob, read_info
    from tuner_model.core.errors import TunerError
    from tuner_model.rate.table import max_parameters

    try:
        info = read_info(data)
    except TunerError as e:
        raise _invalid(f"not a valid blob: {e}") from None
    if info.width * info.height > settings.max_image_pixels:
        raise _invalid(f"the blob declares {info.width}x{info.height}, more pixels than an upload may have "
                       f"({settings.max_image_pixels})")
    most = max_parameters(info.width, info.height, info.channels)
    if info.parameters > most:
        raise _invalid(f"the blob's network has {info.parameters} parameters; the encoder makes at most "
                       f"{most} for a {info.width}x{info.height} image")
    # A network must be paid for in bytes: our encoder spends 5.5-6.5 bits per parameter (header included),
    # so a blob declaring far more parameters than its bytes can code (a few KB of zeros "holding" a
    # 3-million-parameter network that every render then evaluates) is refused before anything is decoded.
    if info.parameters * MIN_BITS_PER_PARAMETER > 8 * len(data):
        raise _invalid(f"the blob declares {info.parameters} parameters in {len(data)} bytes; a network "
                       f"takes at least {MIN_BITS_PER_PARAMETER:g} bits per parameter")
    try:
        decode_blob(data)  # the header alone can't vouch for the tensors
    except TunerError as e:
        raise _invalid(f"not a valid blob: {e}") from None
    return info


@router.post("", response_model=ImageOut, status_code=201, openapi_extra=_BODY,
             responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem},
                        422: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}})
async def upload_blob(request: Request, db: DbDep, store: StoreDep, settings: SettingsDep, response: Response,
                      who: CallerDep, name: Annotated[str | None, Query(max_length=200, description=(
                          "a name for people (default: the uploaded file's)"))] = None) -> ImageOut:
    """Stores a blob made elsewhere (`tuner encode`) as one of the caller's images."""
    data, fields = await read_upload(request, ("application/octet-stream", "application/vnd.tuner"))
    if not data:
        raise ProblemError(400, "empty body")
    info = await run_in_threadpool(_validate, data, settings)
    image_id = blob_image_id(digest(data), who.tenant)
    existing = await run_in_threadpool(db.get_image, image_id)
    if existing is None:
        try:
            await run_in_threadpool(check_quota, db, settings, who.tenant, len(data))
        except SubmitRefused as e:
            raise ProblemError(e.status, e.detail, problem=e.problem) from None
    blob_digest = await run_in_threadpool(put_content, store, "blobs", data)
    await run_in_threadpool(pause_point, "api-before-image-row")  # tests only: a delete elsewhere may land here
    # The row and a check that the blob is still stored, in one transaction under the blob's lock: another
    # tenant's delete of the same bytes can't leave this image without its blob.
    img = await run_in_threadpool(db.add_image_with_blob, Image(
        id=image_id, tenant=who.tenant, width=info.width, height=info.height, channels=info.channels, bytes=len(data),
        bpp=round(info.bpp, 5), psnr=info.meta.get("psnr") if isinstance(info.meta.get("psnr"), int | float) else None,
        parameters=info.parameters, params={}, blob_digest=blob_digest, source="upload", job_id=None,
        created_at=time.time(), name=upload_name(name, fields.get("name"))),
        lambda _d: ensure_content(store, "blobs", data))
    response.headers["Location"] = f"/v1/images/{image_id}"
    return image_out(img)
