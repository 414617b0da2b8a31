"""Query parameters that routes take as one object (a class dependency whose __init__ FastAPI reads, or a
pydantic model of the query, so the OpenAPI lists each parameter). No `from __future__ import annotations`
here: FastAPI resolves these annotations at run time, and a class has no globals of its own to resolve strings
with."""

from collections.abc import Mapping
from copy import copy
from typing import Annotated, Any, get_args

import annotated_types
from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from service.api.problems import ProblemError
from service.api.render import FORMAT_ALIASES, Fit, RenderAsk, RequestedFormat
from tuner_model.rate.request import STEPS_MAX, EncodeRequest, first_error


def _optional(name: str, info: FieldInfo) -> tuple[Any, FieldInfo]:
    """An EncodeRequest field as a query parameter: the same type, bounds and description, absent by default
    (the form's field, or the request's default, then applies). The steps' upper bound is this service's own
    (TUNER_MAX_STEPS, at most STEPS_MAX): `encode_params` checks it with one message for the query and the
    form, and the OpenAPI states it (openapi.py)."""
    field = copy(info)
    field.default = None
    if name == "steps":
        field.metadata = [m for m in info.metadata if not isinstance(m, annotated_types.Le)]
    return info.annotation | None, field


# The encoding parameters given in the query (they win over the form's fields): EncodeRequest's fields, whose
# bounds are declared there once. Other query parameters (name, width, ...) are the routes' own.
EncodeQuery = create_model("EncodeQuery",
                           **{name: _optional(name, info) for name, info in EncodeRequest.model_fields.items()})


def encode_params(given: dict[str, object], max_steps: int) -> EncodeRequest:
    """The encoding parameters as given (the form's fields under the query's), validated by EncodeRequest; a
    422 names the first bad one. `max_steps` is this service's own bound on the steps (TUNER_MAX_STEPS)."""
    most = min(max_steps, STEPS_MAX)  # the bound the OpenAPI states (service/api/openapi.py)
    try:
        params = EncodeRequest.model_validate(given)
    except ValidationError as e:
        where, msg = first_error(e)
        if where == "steps" and e.errors()[0].get("type") == "less_than_equal":
            msg = f"must be at most {most}"
        raise ProblemError(422, f"{where + ': ' if where else ''}{msg}",
                           extra={"errors": [{"loc": [where], "msg": msg}]}) from None
    if params.steps is not None and params.steps > most:
        raise ProblemError(422, f"steps: must be at most {most}",
                           extra={"errors": [{"loc": ["steps"], "msg": f"must be at most {most}"}]})
    return params


def encode_values(query: BaseModel) -> dict[str, Any]:
    """The parameters the query gave."""
    return {k: v for k, v in query.model_dump().items() if v is not None}


def _case_insensitive(names: list[str]) -> str:
    """A JSON-schema pattern (ECMA regex, no flags) matching any of the names in any case."""
    return "^(" + "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in n) for n in names) + ")$"


FORMAT_NAMES = [*get_args(RequestedFormat), *FORMAT_ALIASES]
FORMAT_PATTERN = _case_insensitive(FORMAT_NAMES)
DPR_MAX = 8.0
# The short names other image services use (imgix, imgproxy), accepted as the same parameters.
ALIASES = {"w": "width", "h": "height", "q": "quality", "fm": "format"}
_FORMAT_HELP = (f"{', '.join(FORMAT_NAMES)}, any case (default png; jpg is jpeg); auto: AVIF or WebP when the "
                "Accept header allows, else PNG")


def format_name(text: str) -> str:
    """A format as given (any case, `jpg`) to its canonical name; 422 for anything else."""
    name = FORMAT_ALIASES.get(text.lower(), text.lower())
    if name not in get_args(RequestedFormat):
        raise ProblemError(422, f"format: {text!r} is not one of {', '.join(FORMAT_NAMES)} (any case)")
    return name


class RenderParams(BaseModel):
    """A render's query, as given. Any other parameter is refused (422): `?wdth=50` is never silently the
    native size. The imgix/imgproxy short names w, h, q and fm are the same parameters."""

    model_config = ConfigDict(extra="forbid")

    # The most width and height may be is the service's TUNER_MAX_RENDER_WIDTH/HEIGHT: render.plan enforces it
    # (with dpr, and with the area cap) and the OpenAPI states it (service/api/openapi.py, settings_bounds).
    width: int | None = Field(None, ge=1, description="output width, at most TUNER_MAX_RENDER_WIDTH (after dpr)")
    height: int | None = Field(None, ge=1, description="output height, at most TUNER_MAX_RENDER_HEIGHT (after dpr)")
    fit: Fit | None = Field(None, description="with both sides: contain (default), cover or fill")
    format: str | None = Field(None, pattern=FORMAT_PATTERN, description=_FORMAT_HELP)
    quality: int | None = Field(None, ge=1, le=100, description="for jpeg, webp and avif")
    crop: str | None = Field(None, description="region left,top,right,bottom in fractions, e.g. 0,0,0.5,0.5")
    dpr: float | None = Field(None, gt=0, le=DPR_MAX, description=(
        "device pixel ratio: multiplies width and height (the native size when neither is given); the render "
        "limits apply to the result"))
    preset: str | None = Field(None, max_length=32, description=(
        "a named render from TUNER_RENDER_PRESETS (by default thumb and preview); parameters given here win "
        "over the preset's"))
    w: int | None = Field(None, ge=1, description="width (the short name)")
    h: int | None = Field(None, ge=1, description="height (the short name)")
    q: int | None = Field(None, ge=1, le=100, description="quality (the short name)")
    fm: str | None = Field(None, pattern=FORMAT_PATTERN, description="format (the short name)")
    exp: int | None = Field(None, description="signed URLs: the Unix time the URL expires (signed too)")
    sig: str | None = Field(None, description="signed URLs: the signature (`tuner sign`, or render-url)")
    kid: str | None = Field(None, max_length=40, description=(
        "signed URLs from render-url: the id of the API key that minted it (signed too; revoking the key ends it)"))
    v: str | None = Field(None, max_length=16, description=(
        "signed URLs from render-url: the image's version (signed too; a deleted image's URL stays dead)"))


class RenderUrlParams(RenderParams):
    expires_in: int | None = Field(None, ge=1, le=10 * 365 * 86400, description=(
        "seconds the URL stays valid (default: TUNER_SIGNED_URL_TTL_S, a day; at most TUNER_SIGNED_URL_MAX_TTL_S)"))


class RenderQuery:
    """What a render asks for once the short names and a preset are merged: `ask` (service/api/render.py)."""

    def __init__(self, given: RenderParams, presets: Mapping[str, Any]) -> None:
        values: dict[str, Any] = {k: getattr(given, k) for k in ("width", "height", "fit", "format", "quality", "crop",
                                                                 "dpr")}
        for short, name in ALIASES.items():
            value = getattr(given, short)
            if value is None:
                continue
            if values[name] is not None and values[name] != value:
                raise ProblemError(422, f"{short} and {name} are the same parameter and disagree")
            values[name] = value
        if given.preset is not None:
            if given.preset not in presets:
                raise ProblemError(422, f"preset: no preset {given.preset!r} (this service has "
                                        f"{', '.join(sorted(presets)) or 'none'})")
            for k, v in presets[given.preset].model_dump(exclude_none=True).items():
                if values[k] is None:
                    values[k] = v
        self.format = format_name(str(values["format"])) if values["format"] is not None else "png"
        self.ask = RenderAsk(width=values["width"], height=values["height"], fit=values["fit"] or "contain",
                             format=self.format, quality=values["quality"], crop=values["crop"],
                             dpr=float(values["dpr"] or 1.0))
        self.expires_in: int | None = getattr(given, "expires_in", None)

    def render_params(self) -> dict[str, str]:
        """The render's own query parameters by their canonical names, any preset spelled out (what a signed
        URL for the same render carries)."""
        return self.ask.params()


def render_query(request: Request, given: Annotated[RenderParams, Query()]) -> RenderQuery:
    return RenderQuery(given, request.app.state.settings.render_presets)


def render_url_query(request: Request, given: Annotated[RenderUrlParams, Query()]) -> RenderQuery:
    return RenderQuery(given, request.app.state.settings.render_presets)
