"""The OpenAPI document as the API behaves, applied once to the generated document:

- errors are `application/problem+json` with the Problem schema (FastAPI would say `application/json` and its
  own validation-error shape), each with an example of its most likely problem `type`;
- every /v1 operation can answer 401 (no key) and 429 (rate limit, with Retry-After), and its answers carry the
  RateLimit headers; the bearer scheme is declared;
- the bounds that come from the settings (render width and height, fit steps) are this service's, read from
  the same settings fields the code enforces them with (`SETTINGS_BOUNDS`), not the widest any service allows;
- headers a route sets are declared (`Location` on 201/202);
- every JSON answer has an example (the response model's)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.settings import Settings
from tuner_model.rate.request import STEPS_MAX

from .problem_types import BY_STATUS, PROBLEM_TYPES

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PUBLIC = {"/v1/access", "/v1/limits"}  # answer everyone, and are never rate limited
_ALWAYS = {"401": "no API key, or an unknown or revoked one", "429": "over the request rate; see Retry-After"}
# The problem type an operation's error most likely has, by (path, status), when not the status's general one.
_LIKELY = {("/v1/images", "403"): "quota", ("/v1/blobs", "403"): "quota", ("/v1/images", "422"): "time-limit",
           ("/v1/blobs", "422"): "invalid-blob", ("/v1/images/{image_id}/render", "422"): "render-limit",
           ("/v1/images/{image_id}/render", "403"): "signature", ("/v1/images/{image_id}/render", "429"): "render-busy",
           ("/v1/images/{image_id}/render", "503"): "render-timeout"}
RATE_HEADERS = {
    "RateLimit-Limit": "requests the caller may make in a burst (TUNER_RATE_LIMIT_BURST)",
    "RateLimit-Remaining": "requests left in the burst now",
    "RateLimit-Reset": "seconds until the burst is whole again"}
_LOCATION = {"201": "the new image", "202": "the job: poll it, or GET its /events"}


def settings_bounds(settings: Settings) -> dict[str, int]:
    """The largest value of each query or form parameter whose bound is a setting: what the code enforces."""
    return {"width": settings.max_render_width, "w": settings.max_render_width,
            "height": settings.max_render_height, "h": settings.max_render_height,
            "steps": min(settings.max_steps, STEPS_MAX), "expires_in": settings.signed_url_max_ttl_s}


def _set_maximum(schema: dict[str, Any], most: int) -> None:
    for s in schema.get("anyOf", [schema]):
        if s.get("type") in ("integer", "number"):
            s["maximum"] = most


def _bounds(op: dict[str, Any], bounds: dict[str, int]) -> None:
    for p in op.get("parameters", []):
        if p.get("in") == "query" and p["name"] in bounds:
            _set_maximum(p["schema"], bounds[p["name"]])
    form = op.get("requestBody", {}).get("content", {}).get("multipart/form-data", {}).get("schema", {})
    for name, prop in form.get("properties", {}).items():
        if name in bounds:
            _set_maximum(prop, bounds[name])


def _example(doc: dict[str, Any], content: dict[str, Any]) -> None:
    """The response model's first example, on the operation (where a reader of the operation sees it)."""
    for media in content.values():
        ref = media.get("schema", {}).get("$ref", "")
        found = doc.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {}).get("examples")
        if found and "example" not in media:
            media["example"] = found[0]


def _fix_operation(doc: dict[str, Any], path: str, op: dict[str, Any], bounds: dict[str, int]) -> None:
    responses = op.setdefault("responses", {})
    limited = (path.startswith("/v1/") or path == "/metrics") and path not in _PUBLIC
    if limited:
        for code, why in _ALWAYS.items():
            responses.setdefault(code, {"description": why})
    for code, resp in responses.items():
        if code.isdigit() and int(code) >= 400:
            kind = PROBLEM_TYPES.get(_LIKELY.get((path, code), BY_STATUS.get(int(code), "")))
            media = {"schema": PROBLEM_REF}
            if kind is not None:
                media["example"] = {"type": kind.uri, "title": kind.title, "status": kind.status,
                                    "detail": kind.description, "instance": path}
            resp["content"] = {"application/problem+json": media}
            if code in ("429", "503"):
                resp.setdefault("headers", {})["Retry-After"] = {
                    "description": "seconds to wait", "schema": {"type": "integer"}}
        elif code in _LOCATION and op.get("responses") is responses:
            resp.setdefault("headers", {})["Location"] = {"description": _LOCATION[code],
                                                          "schema": {"type": "string"}}
        if code.isdigit() and limited:
            headers = resp.setdefault("headers", {})
            for name, why in RATE_HEADERS.items():
                headers[name] = {"description": why, "schema": {"type": "integer"}}
        _example(doc, resp.get("content", {}))
    _bounds(op, bounds)


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    bounds = settings_bounds(app.state.settings)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in {"get", "post", "put", "delete", "patch"}:
                _fix_operation(doc, path, op, bounds)
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # our 422 is a Problem
        schemas.pop(unused, None)
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
