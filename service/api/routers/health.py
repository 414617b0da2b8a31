"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tuner_model.rate.effort import DEFAULT_EFFORT, EFFORT_MAX, EFFORT_MIN
from tuner_model.rate.request import BPP_MAX, BPP_MIN, DEFAULT_BPP, PSNR_MAX, PSNR_MIN, STEPS_MAX

from ..deps import CeleryDep, DbDep, MetricsDep, SettingsDep, StoreDep
from ..problem_types import PROBLEM_TYPES
from ..problems import PROBLEM_JSON
from ..queries import DPR_MAX, FORMAT_NAMES
from ..schemas import AccessInfo, EncodeLimits, Health, Problem, Readiness, RenderLimits, ServiceLimits
from ..security import metrics_reader

router = APIRouter(tags=["health"])
log = logging.getLogger("tuner.api")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


def _check(fn) -> str:  # noqa: ANN001
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001 - any failure makes the service not ready
        # The reason goes to the log, not to whoever asks (/readyz needs no key): no hosts, paths or names.
        log.warning("readiness check %s failed: %s", getattr(fn, "__name__", "?"), e)
        return "error"


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Problem}})
async def readyz(db: DbDep, store: StoreDep, celery: CeleryDep, settings: SettingsDep) -> Response:
    """Ready when the database, the store and the broker answer and, with TUNER_READY_NEEDS_WORKER (`tuner
    serve`), when a worker has beaten within TUNER_STALE_AFTER_S: uploads would otherwise only queue."""

    def broker() -> None:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=2)

    checks = {"database": await run_in_threadpool(_check, db.ping),
              "storage": await run_in_threadpool(_check, store.ping),
              "broker": await run_in_threadpool(_check, broker)}
    if settings.ready_needs_worker:
        def worker() -> None:
            last = db.last_worker_beat()
            if last is None or last < time.time() - settings.stale_after_s:
                raise RuntimeError("no worker has beaten recently")

        checks["workers"] = await run_in_threadpool(_check, worker)
    if all(v == "ok" for v in checks.values()):
        return JSONResponse(Readiness(status="ok", checks=checks).model_dump())
    failed = ", ".join(k for k, v in checks.items() if v != "ok")
    down = PROBLEM_TYPES["unavailable"]
    body = {"type": down.uri, "title": down.title, "status": 503,
            "detail": f"not ready: {failed} unreachable", "instance": "/readyz", "checks": checks}
    return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"})


@router.get("/v1/access", response_model=AccessInfo)
def access(request: Request) -> AccessInfo:
    """Whether calls need an API key, and whether signed render URLs are on: what a client (the web page)
    asks before it calls anything that would answer 401. Open to all; it tells nothing about any key."""
    state = request.app.state
    return AccessInfo(keys_required=state.keyring.required(), signed_urls=bool(state.settings.signing_key_bytes))


@router.get("/v1/limits", response_model=ServiceLimits)
def limits(request: Request) -> ServiceLimits:
    """This service's defaults and limits (encoding, uploads, renders, presets), from the code and the settings
    that enforce them: what the web page shows, and what a client can check before it sends. Open to all."""
    settings = request.app.state.settings
    return ServiceLimits(
        encode=EncodeLimits(default_bpp=DEFAULT_BPP, bpp_min=BPP_MIN, bpp_max=BPP_MAX, psnr_min=PSNR_MIN,
                            psnr_max=PSNR_MAX, default_effort=DEFAULT_EFFORT, effort_min=EFFORT_MIN,
                            effort_max=EFFORT_MAX, max_steps=min(settings.max_steps, STEPS_MAX),
                            max_upload_bytes=settings.max_upload_bytes, max_image_pixels=settings.max_image_pixels,
                            time_limit_s=settings.soft_time_limit_s),
        render=RenderLimits(max_width=settings.max_render_width, max_height=settings.max_render_height,
                            max_pixels=settings.max_render_pixels, max_dpr=DPR_MAX, formats=FORMAT_NAMES,
                            presets={k: v.model_dump(exclude_none=True) for k, v in settings.render_presets.items()}))


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_reader)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": Problem}, 403: {"model": Problem}})
async def metrics(m: MetricsDep) -> Response:
    data = await run_in_threadpool(generate_latest, m.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
