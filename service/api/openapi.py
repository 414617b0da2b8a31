"""The OpenAPI document as the API behaves: errors are `application/problem+json` with the Problem schema
(FastAPI would say `application/json` and its own validation-error shape), every /v1 operation can answer 401
(no key) and 429 (rate limit), and the bearer scheme is declared. Applied once to the generated document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PUBLIC = {"/v1/access"}  # answers everyone, and is never rate limited
_ALWAYS = {"401": "no API key, or an unknown or revoked one", "429": "over the request rate; see Retry-After"}


def _fix_operation(path: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    if (path.startswith("/v1/") or path == "/metrics") and path not in _PUBLIC:
        for code, why in _ALWAYS.items():
            responses.setdefault(code, {"description": why})
    for code, resp in responses.items():
        if code.isdigit() and int(code) >= 400:
            resp["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
            if code == "429" or code == "503":
                resp.setdefault("headers", {})["Retry-After"] = {
                    "description": "seconds to wait", "schema": {"type": "integer"}}


def document(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in {"get", "post", "put", "delete", "patch"}:
                _fix_operation(path, op)
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
