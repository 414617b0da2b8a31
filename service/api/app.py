"""`create_app(settings)`: the FastAPI application, everything it needs built here and injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.access.keys import KeyRing
from service.access.ratelimit import make_limiter
from service.jobqueue import create_celery
from service.records import Database
from service.settings import Settings
from service.storage import BlobStore, make_store
from service.sweeper import Sweeper

from . import openapi, problems
from .head import HeadAsGet
from .headers import SecurityHeaders
from .limits import BodySizeLimit
from .metrics import Metrics
from .observe import RequestObserver
from .render import Renderer
from .routers import blobs, comparisons, estimate, health, images, jobs, page


def create_app(settings: Settings | None = None, *, store: BlobStore | None = None,
               celery: Celery | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The sweeper bounds the render cache and old uploads while the app serves (no-op on S3).
        app.state.sweeper.start()
        try:
            yield
        finally:
            app.state.sweeper.stop()
            app.state.renderer.close()

    app = FastAPI(title="TUNER image service", lifespan=lifespan,
                  description="Upload an image; a worker fits a small sinusoidal network to it; the network's "
                              "weights are the compressed image, rendered back at any size.",
                  version="1.0.0", openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None)  # /docs: our own page (routers/page.py), no CDN scripts
    db = Database(settings.resolved_database_url)
    db.engine  # noqa: B018 - create the tables now, not on the first request
    store = store or make_store(settings)
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.celery = celery or create_celery(settings)
    app.state.keyring = KeyRing(settings, db)
    app.state.limiter = make_limiter(settings.broker_url, settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.renderer = Renderer(settings, store)
    app.state.sweeper = Sweeper(settings, store, db)
    if settings.render_compile:
        from tuner_model.render import warm_up_in_background

        warm_up_in_background()
    app.state.metrics = Metrics(db)
    problems.install(app)
    openapi.install(app)
    for r in (health.router, images.router, comparisons.router, jobs.router, blobs.router, estimate.router,
              page.router):
        app.include_router(r)
    app.mount("/static", page.static_files(), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes, body_timeout_s=settings.http_body_timeout_s)
    app.add_middleware(SecurityHeaders)  # CSP, no framing, nosniff, no referrer: every answer
    app.add_middleware(HeadAsGet)  # HEAD on every GET route, answered as GET without the body
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # off unless configured: a browser page on another origin may then call the API
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                           expose_headers=["Location", "ETag", "Retry-After", "X-Result-Width", "X-Result-Height",
                                           "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"])
    # Outermost: every answer is counted (by route and status) and gets the caller's RateLimit headers.
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    return app
