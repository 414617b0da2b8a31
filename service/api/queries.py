"""Query parameters that routes take as one object (a class dependency: FastAPI reads its __init__, so the
OpenAPI lists each parameter as before). No `from __future__ import annotations` here: FastAPI resolves these
annotations at run time, and a class has no globals of its own to resolve strings with."""

from typing import Annotated

from fastapi import Query

from service.api.render import Fit, RequestedFormat
from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN
from tuner_model.rate.request import BPP_MAX, BPP_MIN, PSNR_MAX, PSNR_MIN, STEPS_MAX

MAX_SIDE = 1 << 16  # the most any render may ask for; the service's own caps (TUNER_MAX_RENDER_*) are lower


class EncodeQuery:
    """The encoding parameters given in the query (they win over the form's fields)."""

    def __init__(
        self,
        bpp: Annotated[float | None, Query(ge=BPP_MIN, le=BPP_MAX, description="target bits per pixel")] = None,
        psnr: Annotated[float | None, Query(ge=PSNR_MIN, le=PSNR_MAX, description=(
            "target PSNR in dB (not with bpp)"))] = None,
        steps: Annotated[int | None, Query(ge=1, le=STEPS_MAX, description=(
            "optimisation steps (advanced; the service's TUNER_MAX_STEPS applies)"))] = None,
        effort: Annotated[int | None, Query(ge=EFFORT_MIN, le=EFFORT_MAX, description=(
            f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best); the default is a balance"))] = None,
    ) -> None:
        self.values = {"bpp": bpp, "psnr": psnr, "steps": steps, "effort": effort}


class RenderQuery:
    """What a render asks for: size, fit, format, quality and crop."""

    def __init__(
        self,
        width: Annotated[int | None, Query(ge=1, le=MAX_SIDE, description=(
            "output width (TUNER_MAX_RENDER_WIDTH applies)"))] = None,
        height: Annotated[int | None, Query(ge=1, le=MAX_SIDE, description=(
            "output height (TUNER_MAX_RENDER_HEIGHT applies)"))] = None,
        fit: Annotated[Fit, Query(description="with both sides: contain, cover or fill")] = "contain",
        format: Annotated[RequestedFormat, Query(description=(  # noqa: A002 - the query parameter's public name
            "auto: AVIF or WebP when the Accept header allows, else PNG"))] = "png",
        quality: Annotated[int | None, Query(ge=1, le=100)] = None,
        crop: Annotated[str | None, Query(description="region left,top,right,bottom in fractions, e.g. 0,0,0.5,0.5")]
        = None,
        exp: Annotated[int | None, Query(description="signed URLs: the Unix time the URL expires (signed too)")] = None,
        sig: Annotated[str | None, Query(description="signed URLs: the signature (`tuner sign`, or render-url)")]
        = None,
    ) -> None:
        self.width, self.height, self.fit = width, height, fit
        self.format, self.quality, self.crop = format, quality, crop
        self.exp, self.sig = exp, sig

    def render_params(self) -> dict[str, str]:
        """The render's own query parameters as given (what a signed URL for the same render carries)."""
        values = {"width": self.width, "height": self.height, "fit": self.fit, "format": self.format,
                  "quality": self.quality, "crop": self.crop}
        return {k: str(v) for k, v in values.items() if v is not None}
