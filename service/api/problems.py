"""RFC 9457 problem details: every error leaves the API as `application/problem+json`."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .problem_types import PROBLEM_TYPES, problem_type
from .render_errors import BadCrop, OverLimits, RenderBusy, RenderError, RenderGone, RenderTimeout
from .schemas import Problem, ProblemTypeOut

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("tuner.api")


class ProblemError(StarletteHTTPException):
    """Raised anywhere (a route, a dependency, the body reader) to answer with a problem document. `problem`
    names its type (service/api/problem_types.py); without it, the status's general type."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None, problem: str | None = None) -> None:
        problem_type(status, problem)  # an unknown name, or one of another status, fails where it is raised
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.extra = extra or {}
        self.problem = problem


def problem_response(status: int, detail: str | None, instance: str | None = None,
                     headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                     problem: str | None = None) -> JSONResponse:
    kind = problem_type(status, problem)
    if kind is not None:
        body = Problem(type=kind.uri, title=kind.title, status=status, detail=detail, instance=instance)
    else:
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        body = Problem(type="about:blank", title=title, status=status, detail=detail, instance=instance)
    content = body.model_dump(exclude_none=True)
    content.update(extra or {})
    h = {"Cache-Control": "no-store", **(headers or {})}
    return JSONResponse(content, status_code=status, media_type=PROBLEM_JSON, headers=h)


# The renderer's errors as HTTP: status and problem type (None: the status's general type). 499 is nginx's
# "client closed request": nobody reads it, but logs and metrics then tell a client that left from a fault.
RENDER_PROBLEMS: dict[type[RenderError], tuple[int, str | None]] = {
    BadCrop: (422, None), OverLimits: (422, "render-limit"), RenderBusy: (429, "render-busy"),
    RenderGone: (499, None), RenderTimeout: (503, "render-timeout")}


def render_problem(exc: RenderError, instance: str | None = None) -> JSONResponse:
    """The problem document answering one of the renderer's errors."""
    status, problem = RENDER_PROBLEMS[type(exc)]
    headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    return problem_response(status, exc.detail, instance, headers, problem=problem)


def allowed_methods(app: FastAPI, path: str) -> set[str]:
    """Every method the API documents at `path` (the OpenAPI paths are the routes, flattened)."""
    methods: set[str] = set()
    for template, item in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in item if m in _METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return methods


_METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}
UNKNOWN = "unknown parameter"


def validation_message(error: dict[str, Any]) -> str:
    """pydantic's message for one error, without its "Value error, " prefix; "unknown parameter" for an extra."""
    if error.get("type") == "extra_forbidden":
        return UNKNOWN
    return str(error.get("msg", "")).removeprefix("Value error, ")


def query_names(request: Request) -> list[str]:
    """The query parameters the matched operation declares (a query model's fields included)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    stack, names = ([dependant] if dependant is not None else []), set()
    while stack:
        d = stack.pop()
        for f in d.query_params:
            ann = f.field_info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                names |= {info.alias or name for name, info in ann.model_fields.items()}
            else:
                names.add(f.alias)
        stack.extend(d.dependencies)
    return sorted(names)


def install(app: FastAPI) -> None:
    @app.get("/problems/{name}", tags=["health"], response_model=ProblemTypeOut,
             responses={404: {"model": Problem}})
    def describe_problem(name: str) -> ProblemTypeOut:
        """What a problem `type` means: every error's `type` is one of these (a relative URI to here)."""
        kind = PROBLEM_TYPES.get(name)
        if kind is None:
            raise ProblemError(404, f"no problem type {name!r}")
        return ProblemTypeOut(type=kind.uri, status=kind.status, title=kind.title, description=kind.description)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        extra = getattr(exc, "extra", None)
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request.url.path)))
        return problem_response(exc.status_code, detail, request.url.path, headers, extra,
                                getattr(exc, "problem", None))

    @app.exception_handler(RenderError)
    async def _render(request: Request, exc: RenderError) -> JSONResponse:
        return render_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": validation_message(e)} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        unknown = [e["loc"][-1] for e in errors if e["msg"] == UNKNOWN and e["loc"][:1] == ["query"]]
        if unknown:  # a typo: say what the operation takes
            detail = (f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; this takes "
                      f"{', '.join(query_names(request))}")
        return problem_response(422, detail, request.url.path, extra={"errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(500, "internal error", request.url.path)
