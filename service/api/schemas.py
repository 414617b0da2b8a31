"""Pydantic models of every request and response body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from tuner_model.rate.request import EncodeRequest  # pure data: no torch in the API

from .examples import EXAMPLES

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _from_unix(v: object) -> object:
    return datetime.fromtimestamp(v, UTC) if isinstance(v, int | float) else v


def _example(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The model's example (service/api/examples.py), shown on every operation that answers with it."""
    schema["examples"] = [EXAMPLES[model.__name__]]


# Records keep Unix seconds; clients get RFC 3339 / ISO 8601 times in UTC.
Timestamp = Annotated[datetime, BeforeValidator(_from_unix)]


class ValidationIssue(BaseModel):
    loc: list[str] = Field(description="where: `query`, `body` or `header`, then the parameter's name")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details. `type` tells the kind of problem: a relative URI, /problems/NAME (GET it for
    its meaning; docs/SERVICE.md lists them all)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "/problems/time-limit", "title": "Fit over the time limit", "status": 422,
        "detail": "this encode is estimated at 62.0 minutes (3720 s) on the workers, ...",
        "instance": "/v1/images"}]})

    type: str = Field("about:blank", description="/problems/NAME: the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ValidationIssue] | None = Field(None, description="validation problems: each parameter refused")
    checks: dict[str, str] | None = Field(None, description="/readyz: each dependency, `ok` or `error`")


class ProblemTypeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

    type: str
    status: int
    title: str
    description: str


# The client's encoding parameters are the library's request object, validated once, by its own rules
# (bounds, one target): the worker rebuilds the same object from the job's stored parameters.
EncodeParams = EncodeRequest


class Links(BaseModel):
    job: str | None = None
    image: str | None = None
    weights: str | None = None
    render: str | None = None


class SignedUrl(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

    url: str = Field(description="a path with its query; renders without an API key until it expires")
    expires_at: Timestamp | None = None


class JobAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

    job_id: str
    image_id: str
    status: JobStatus
    deduplicated: bool = Field(description="an identical request (same bytes and parameters, or the same "
                                           "Idempotency-Key) was accepted before; this is its job")
    width: int
    height: int
    params: EncodeParams
    tiles: int = Field(1, ge=1, description="how many overlapping tiles the image is fitted as, one network "
                                            "each, in parallel across the workers (1: one network)")
    eta_s: float | None = Field(None, ge=0, description="estimated seconds until the blob is ready: the "
                                                        "admission estimate on the workers alive now, not "
                                                        "counting jobs queued ahead (0 once succeeded)")
    links: Links


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

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
    eta_s: float | None = Field(None, ge=0, description="estimated seconds until the fit is done: the "
                                                        "admission estimate while queued, then from its "
                                                        "progress so far; null early in the fit (or when it "
                                                        "failed or was cancelled), 0 once succeeded")
    image_deleted_at: Timestamp | None = Field(None, description="when the job's image was deleted (its links "
                                                                 "then lead nowhere)")
    links: Links


class JobPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": []}]})

    items: list[JobOut] = Field(description="the caller's jobs, newest first")


class Estimate(BaseModel):
    """What a fit of this size and these parameters would take, as the service admits uploads."""

    model_config = ConfigDict(json_schema_extra=_example)

    seconds: float = Field(description="the expected wall time of the fit on this service's workers alive now")
    steps: int = Field(description="the optimisation steps it plans (every tile's)")
    tiles: int = Field(1, ge=1, description="how many tiles the image would be fitted as (1: one network)")
    workers: int = Field(1, ge=1, description="the fits the workers run at once, which the estimate counts")
    admitted: bool = Field(description="whether an upload like this would be accepted (not over the time limit)")
    detail: str | None = Field(None, description="why not, when it would be refused")


class ImageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

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
    name: str | None = Field(None, description="the name the upload came with (its file's), if any")
    job_id: str | None
    blob_sha256: str
    created_at: Timestamp
    links: Links


class ImagePage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [], "next": None}]})

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
    model_config = ConfigDict(json_schema_extra=_example)

    image_id: str
    bytes: int = Field(description="the blob's bytes")
    psnr: float | None = Field(description="the blob's PSNR at the native size")
    items: list[ComparisonOut]
    original: str | None = Field(None, description="the original upload's URL while the service keeps it")


class AccessInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"keys_required": True, "signed_urls": False}]})

    keys_required: bool = Field(description="calls need Authorization: Bearer <API key>")
    signed_urls: bool = Field(description="GET /v1/images/{id}/render-url can sign render URLs")


class EncodeLimits(BaseModel):
    default_bpp: float = Field(description="the rate of an upload with neither bpp nor psnr")
    bpp_min: float
    bpp_max: float
    psnr_min: float
    psnr_max: float
    default_effort: int
    effort_min: int
    effort_max: int
    max_steps: int
    max_upload_bytes: int
    max_image_pixels: int
    time_limit_s: int = Field(description="the workers' soft time limit: an upload estimated past it is refused")


class RenderLimits(BaseModel):
    max_width: int
    max_height: int
    max_pixels: int
    max_dpr: float
    formats: list[str]
    presets: dict[str, dict[str, Any]] = Field(description="named renders: `render?preset=NAME`")


class ServiceLimits(BaseModel):
    """This service's defaults and limits, from its code and settings: what the page and the docs show."""

    model_config = ConfigDict(json_schema_extra=_example)

    encode: EncodeLimits
    render: RenderLimits


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_extra=_example)

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
