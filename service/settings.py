"""One `Settings` class for the API, the worker and `tuner serve`, read from `TUNER_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNER_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Path("./tuner-data")
    # None: an embedded broker (kombu's SQLAlchemy transport on SQLite under data_dir), for one machine.
    broker_url: str | None = None
    # None: SQLite under data_dir. Workers on other machines need a shared database (e.g. PostgreSQL).
    database_url: str | None = None

    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = "tuner"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = ""

    # Uploads and encoding
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(16_000_000, ge=1)
    max_steps: int = Field(20_000, ge=1)
    default_steps: int | None = Field(None, ge=1)
    max_pending_jobs: int = Field(1000, ge=1)  # queued + running; above it uploads get 429
    fit_device: str = "auto"
    # A worker that takes a job also takes up to fit_batch_max - 1 queued jobs of the same shape and
    # parameters and fits them together (one batched fit, docs/SERVICE.md). Off on the CPU by default:
    # there one network already keeps every core busy and batching measured slower (docs/PERFORMANCE.md).
    fit_batch_max: int = Field(8, ge=1)
    fit_batch_on_cpu: bool = False
    # The workers' speed, for the API's admission estimate (service/estimate.py): seconds of one full-image
    # fit step per pixel per hidden neuron. None: tuner_model.effort's 2-core CPU figure, or a guess for a
    # GPU when fit_device names CUDA. Set it from a worker's measured fit_seconds to refuse exactly the
    # uploads that would run past soft_time_limit_s.
    fit_seconds_per_pixel_neuron: float | None = Field(None, gt=0)

    # Rendering
    max_render_width: int = Field(8192, ge=1)
    max_render_height: int = Field(8192, ge=1)
    max_render_pixels: int = Field(16_777_216, ge=1)
    render_concurrency: int = Field(2, ge=1)  # simultaneous renders in one API process; more get 429
    decoded_cache_entries: int = Field(16, ge=0)
    # Compile the renderer's fused sine in the background at start-up (seconds of CPU, needs a C++
    # compiler; renders are eager until it is ready, and stay eager if it fails): ~0.65x the render time.
    render_compile: bool = True

    # Storage lifecycle (local store; docs/SERVICE.md). The render cache is kept under this many bytes by
    # evicting the least recently used renders; 0 turns the cache off (nothing stored or read). Uploads are
    # needed only until their job finishes: older ones that no queued or running job uses are deleted.
    render_cache_max_bytes: int = Field(2 * 1024**3, ge=0)
    upload_retention_s: float = Field(86_400.0, gt=0)
    cache_sweep_interval_s: float = Field(60.0, gt=0)

    # Worker: time limits, redelivery, recovery
    soft_time_limit_s: int = Field(3000, ge=1)
    hard_time_limit_s: int = Field(3300, ge=2)
    visibility_timeout_s: int | None = None  # None: hard limit + 10 minutes
    max_attempts: int = Field(3, ge=1)  # a job whose worker dies this many times is failed
    heartbeat_s: float = Field(5.0, gt=0)
    stale_after_s: float = Field(60.0, gt=0)  # a running job without heartbeat for this long is re-queued
    recovery_interval_s: float = Field(15.0, gt=0)
    # A queued job whose message was last sent this long ago is sent again, in case the broker lost it
    # (Redis restarted without persistence; the API died between saving the job and sending it). Longer
    # than a send takes; a duplicate costs a worker one database read.
    resend_queued_after_s: float = Field(300.0, gt=0)
    max_tasks_per_child: int = Field(20, ge=1)
    worker_concurrency: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.soft_time_limit_s >= self.hard_time_limit_s:
            raise ValueError("TUNER_SOFT_TIME_LIMIT_S must be lower than TUNER_HARD_TIME_LIMIT_S")
        if self.visibility_timeout_s is not None and self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError("TUNER_VISIBILITY_TIMEOUT_S must be above TUNER_HARD_TIME_LIMIT_S")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError("TUNER_STALE_AFTER_S must be more than twice TUNER_HEARTBEAT_S")
        return self

    @cached_property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tuner.sqlite').resolve()}"

    @property
    def visibility_timeout(self) -> int:
        return self.visibility_timeout_s or self.hard_time_limit_s + 600
