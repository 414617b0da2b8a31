"""The problem types the API answers with (RFC 9457 `type`): a client tells a fit refused for its time from a
bad parameter by `type`, never by parsing `detail`. Each is a relative URI, `/problems/NAME`, that the API
itself serves (GET /problems/{name}) and docs/SERVICE.md lists (a test keeps the two the same)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemType:
    name: str
    status: int
    title: str
    description: str

    @property
    def uri(self) -> str:
        return f"/problems/{self.name}"


PROBLEM_TYPES: dict[str, ProblemType] = {p.name: p for p in (
    ProblemType("bad-request", 400, "Bad request", "malformed multipart, no `file` field, or an empty body"),
    ProblemType("unauthorized", 401, "API key needed", "no API key where one is needed, a malformed "
                "Authorization header, or an unknown or revoked key (with WWW-Authenticate: Bearer)"),
    ProblemType("signature", 403, "Bad signed URL", "a signed URL whose signature is wrong or that has expired, "
                "or a signature where URL signing is off"),
    ProblemType("quota", 403, "Storage quota reached", "the tenant stores as many bytes as its quota allows; "
                "delete images to make room"),
    ProblemType("forbidden", 403, "Forbidden", "this key may not do this (e.g. read /metrics)"),
    ProblemType("not-found", 404, "Not found", "no such job, image or route, or one of another tenant's"),
    ProblemType("method-not-allowed", 405, "Method not allowed", "the path does not take this method; `Allow` "
                "lists those it takes"),
    ProblemType("request-timeout", 408, "Request too slow", "the body did not arrive within "
                "TUNER_HTTP_BODY_TIMEOUT_S"),
    ProblemType("conflict", 409, "Conflict", "the resource's state does not allow it: cancelling a finished job, "
                "a signed URL where signing is not configured"),
    ProblemType("too-large", 413, "Body too large", "the body is over TUNER_MAX_UPLOAD_BYTES (counted as it "
                "streams in)"),
    ProblemType("unsupported-media-type", 415, "Unsupported media type", "neither multipart nor an accepted raw "
                "type, or bytes that are not an image of a supported kind"),
    ProblemType("validation", 422, "Invalid parameters", "a parameter is missing, malformed, out of its bounds or "
                "unknown; `errors` lists each one (`loc`, `msg`)"),
    ProblemType("invalid-image", 422, "Invalid image", "the upload does not decode, or is over "
                "TUNER_MAX_IMAGE_PIXELS"),
    ProblemType("invalid-blob", 422, "Invalid blob", "the uploaded blob is not one this service would make, or "
                "does not decode"),
    ProblemType("time-limit", 422, "Fit over the time limit", "the fit is estimated to run past the workers' "
                "time limit; lower the effort or the rate, or send a smaller image"),
    ProblemType("render-limit", 422, "Render over the limits", "the render is over the width, height or area "
                "caps, or over the render budget for this network"),
    ProblemType("idempotency-key-reused", 422, "Idempotency-Key reused", "this Idempotency-Key was used with a "
                "different request"),
    ProblemType("rate-limited", 429, "Over the request rate", "over the tenant's request rate; see Retry-After "
                "and the RateLimit headers"),
    ProblemType("too-many-jobs", 429, "Too many jobs", "the tenant's or the service's queued and running jobs "
                "are at their limit; see Retry-After"),
    ProblemType("render-busy", 429, "Renderers busy", "the render wait queue is full or the render waited too "
                "long; see Retry-After"),
    ProblemType("internal", 500, "Internal error", "a fault of the service (logged)"),
    ProblemType("unavailable", 503, "Unavailable", "the job queue, database or storage is unreachable; see "
                "Retry-After"),
    ProblemType("render-timeout", 503, "Render timed out", "the render ran past TUNER_RENDER_TIMEOUT_S"),
)}

# The type of a problem raised without one: the general type of its status.
BY_STATUS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
             408: "request-timeout", 409: "conflict", 413: "too-large", 415: "unsupported-media-type",
             422: "validation", 429: "rate-limited", 500: "internal", 503: "unavailable"}


def problem_type(status: int, name: str | None = None) -> ProblemType | None:
    """The named type (it must exist, with this status), else the status's general one; None for a status
    without one (the problem is then `about:blank`)."""
    if name is not None:
        found = PROBLEM_TYPES[name]
        assert found.status == status, (name, status)
        return found
    general = BY_STATUS.get(status)
    return PROBLEM_TYPES[general] if general else None
