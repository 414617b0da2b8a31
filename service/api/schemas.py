"""Pydantic models of every request and response body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from tuner_model.rate.request import EncodeRequest  # pure data: no torch in the API

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _from_unix(v: object) -> object:
    return datetime.fromtimestamp(v, UTC) if isinstance(v, int | float) else v


# Records keep Unix seconds; clients get RFC 3339 / ISO 8601 times in UTC.
Timestamp = Annotated[datetime, BeforeValidator(_from_unix)]


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


# The client's encoding parameters are the library's request object, validated once, by its own rules
# (bounds, one target): the worker rebuilds the same object from the job's stored parameters.
EncodeParams = EncodeRequest


class Links(BaseModel):
    job: str | None = None
    image: str | None = None
    weights: str | None = None
    render: str | None = None


class SignedUrl(BaseModel):
    url: str = Field(description="a path with its query; renders without an API key until it expires")
    expires_at: Timestamp | None = None


class JobAccepted(BaseModel):
    job_id: str
    image_id: str
    status: JobStatus
    deduplicated: bool = Field(description="an identical request (same bytes and parameters, or the same "
                                           "Idempotency-Key) was accepted before; this is its job")
    width: int
    height: int
    params: EncodeParams
    links: Links


class JobOut(BaseModel):
    job_id: str
    image_id: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    step: int
    steps: int | None
    psnr: float | None = Field(description="current PSNR estimate while running; the final PSNR when done")
    error: str | None
    attempts: int
    params: EncodeParams
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    batch_size: int | None = Field(None, description="how many jobs shared the fit of this one's image "
                                                     "(1: fitted alone); set when the job succeeds")
    eta_s: float | None = Field(None, ge=0, description="estimated seconds until the fit is done, from its "
                                                        "progress so far; null while queued and early in the "
                                                        "fit (or when it failed or was cancelled), 0 once "
                                                        "succeeded")
    links: Links


class ImageOut(BaseModel):
    image_id: str
    width: int
    height: int
    channels: int
    bytes: int
    bpp: float
    psnr: float | None
    parameters: int = Field(description="number of stored network parameters")
    params: EncodeParams | None
    source: Literal["fit", "upload"]
    job_id: str | None
    blob_sha256: str
    created_at: Timestamp
    links: Links


class ImagePage(BaseModel):
    items: list[ImageOut] = Field(description="the caller's images, newest first")
    next: str | None = Field(None, description="the cursor of the next page (pass it as `cursor`); null on the "
                                               "last page")


class ComparisonOut(BaseModel):
    codec: Literal["jpeg", "webp", "avif"]
    quality: int = Field(description="the codec's quality setting: the highest whose file fits the blob's bytes")
    bytes: int
    psnr: float
    url: str


class Comparisons(BaseModel):
    image_id: str
    bytes: int = Field(description="the blob's bytes")
    psnr: float | None = Field(description="the blob's PSNR at the native size")
    items: list[ComparisonOut]


class AccessInfo(BaseModel):
    keys_required: bool = Field(description="calls need Authorization: Bearer <API key>")
    signed_urls: bool = Field(description="GET /v1/images/{id}/render-url can sign render URLs")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
