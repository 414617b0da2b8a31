"""What an upload would take, before it is sent: the admission estimate the API refuses uploads with
(service/estimate.py), for the page to show before Encode and for a client to size its requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError

from service.estimate import estimate_fit_seconds, over_time_limit, planned_steps

from ..deps import SettingsDep
from ..problems import ProblemError, validation_message
from ..queries import EncodeQuery
from ..schemas import EncodeParams, Estimate, Problem
from ..security import CallerDep

router = APIRouter(prefix="/v1/estimate", tags=["images"])


@router.get("", response_model=Estimate, responses={c: {"model": Problem} for c in (401, 422)})
async def estimate(
    settings: SettingsDep, who: CallerDep, query: Annotated[EncodeQuery, Depends()],
    width: Annotated[int, Query(ge=1, le=1 << 16, description="the image's width")],
    height: Annotated[int, Query(ge=1, le=1 << 16, description="the image's height")],
    channels: Annotated[int, Query(ge=1, le=3, description="1 for grey, 3 for colour")] = 3,
) -> Estimate:
    """The fit time the service expects for an image of this size with these parameters (those of
    POST /v1/images), and whether such an upload would be admitted."""
    try:
        params = EncodeParams.model_validate({k: v for k, v in query.values.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise ProblemError(422, f"{where + ': ' if where else ''}{validation_message(err)}") from None
    seconds = estimate_fit_seconds(width, height, channels, params, settings)
    steps = planned_steps(params, settings)
    if width * height > settings.max_image_pixels:
        why: str | None = f"{width}x{height} is over the {settings.max_image_pixels}-pixel limit"
    elif params.steps is not None and params.steps > settings.max_steps:
        why = f"steps: must be at most {settings.max_steps}"
    else:
        why = over_time_limit(width, height, channels, params, settings)
    return Estimate(seconds=round(seconds, 1), steps=steps, admitted=why is None, detail=why)
