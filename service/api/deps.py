"""Dependencies: everything a route needs comes from the app's state, built once in `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from service.records import Database
from service.settings import Settings
from service.storage import BlobStore

from .metrics import Metrics
from .render import Renderer


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_store(request: Request) -> BlobStore:
    return request.app.state.store


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_renderer(request: Request) -> Renderer:
    return request.app.state.renderer


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
RendererDep = Annotated[Renderer, Depends(get_renderer)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@dataclass(frozen=True)
class Services:
    """The app's services in one parameter, for a route that needs most of them."""

    settings: Settings
    db: Database
    store: BlobStore
    celery: Celery
    metrics: Metrics


def get_services(request: Request) -> Services:
    state = request.app.state
    return Services(state.settings, state.db, state.store, state.celery, state.metrics)


ServicesDep = Annotated[Services, Depends(get_services)]
