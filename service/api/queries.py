"""Query parameters that routes take as one object (a class dependency: FastAPI reads its __init__, so the
OpenAPI lists each parameter as before). No `from __future__ import annotations` here: FastAPI resolves these
annotations at run time, and a class has no globals of its own to resolve strings with."""

from typing import Annotated

from fastapi import Query

from service.api.render import Fit, Format
from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN


class EncodeQuery:
    """The encoding parameters given in the query (they win over the form's fields)."""

    def __init__(
        self,
        bpp: Annotated[float | None, Query(description="target bits per pixel")] = None,
        psnr: Annotated[float | None, Query(description="target PSNR in dB")] = None,
        steps: Annotated[int | None, Query(description="optimisation steps (advanced)")] = None,
        effort: Annotated[int | None, Query(ge=EFFORT_MIN, le=EFFORT_MAX, description=(
            f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best); the default is a balance"))] = None,
    ) -> None:
        self.values = {"bpp": bpp, "psnr": psnr, "steps": steps, "effort": effort}


class RenderQuery:
    """What a render asks for: size, fit, format, quality and crop."""

    def __init__(
        self,
        width: Annotated[int | None, Query(ge=1)] = None,
        height: Annotated[int | None, Query(ge=1)] = None,
        fit: Annotated[Fit, Query(description="with both sides: contain, cover or fill")] = "contain",
        format: Annotated[Format, Query()] = "png",  # noqa: A002 - the query parameter's public name
        quality: Annotated[int | None, Query(ge=1, le=100)] = None,
        crop: Annotated[str | None, Query(description="region left,top,right,bottom in fractions, e.g. 0,0,0.5,0.5")]
        = None,
    ) -> None:
        self.width, self.height, self.fit = width, height, fit
        self.format, self.quality, self.crop = format, quality, crop
