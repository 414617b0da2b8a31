"""What an upload would take, before it is sent: the admission estimate the API refuses uploads with
(service/estimate.py), for the page to show before Encode and for a client to size its requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from service.estimate import estimate_fit_seconds, fit_slots, job_plan, over_time_limit
from tuner_model.core.errors import ConfigError
from tuner_model.rate.request import STEPS_MAX
from tuner_model.rate.tile_plan import TiledPlan

from ..deps import DbDep, SettingsDep
from ..problems import ProblemError
from ..queries import EncodeQuery, encode_params, encode_values
from ..schemas import Estimate, Problem
from ..security import CallerDep

router = APIRouter(prefix="/v1/estimate", tags=["images"])


@router.get("", response_model=Estimate, responses={c: {"model": Problem} for c in (401, 422)})
async def estimate(
    settings: SettingsDep, db: DbDep, who: CallerDep, query: Annotated[EncodeQuery, Query()],
    width: Annotated[int, Query(ge=1, le=1 << 16, description="the image's width")],
    height: Annotated[int, Query(ge=1, le=1 << 16, description="the image's height")],
    channels: Annotated[int, Query(ge=1, le=3, description="1 for grey, 3 for colour")] = 3,
) -> Estimate:
    """The fit time the service expects for an image of this size with these parameters (those of
    POST /v1/images) on the workers alive now, and whether such an upload would be admitted."""
    params = encode_params(encode_values(query), STEPS_MAX)  # this service's own limit: `admitted` says it
    try:
        plan = job_plan(params, width, height, channels, settings)
    except ConfigError as e:  # e.g. 2 channels: no image decodes to that
        raise ProblemError(422, str(e)) from None
    workers = await run_in_threadpool(fit_slots, db, settings)
    seconds, steps = estimate_fit_seconds(plan, settings, workers), plan.total_steps
    if width * height > settings.max_image_pixels:
        why: str | None = f"{width}x{height} is over the {settings.max_image_pixels}-pixel limit"
    elif params.steps is not None and params.steps > settings.max_steps:
        why = f"steps: must be at most {settings.max_steps}"
    else:
        why = over_time_limit(plan, settings)
    return Estimate(seconds=round(seconds, 1), steps=steps, admitted=why is None, detail=why,
                    tiles=plan.count if isinstance(plan, TiledPlan) else 1, workers=workers)
