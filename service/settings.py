"""One `Settings` class for the API, the worker and `tuner serve`, read from `TUNER_*` environment variables."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.access.signing import MIN_KEY_BYTES, parse_keys


class RenderPreset(BaseModel):
    """A named render (`?preset=NAME`): any of the render's own parameters; those in the query win."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fit: Literal["contain", "cover", "fill"] | None = None
    format: Literal["png", "webp", "jpeg", "avif", "auto"] | None = None
    quality: int | None = Field(None, ge=1, le=100)
    crop: str | None = None
    dpr: float | None = Field(None, gt=0, le=8)


PRESET_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# The presets a service has unless TUNER_RENDER_PRESETS (JSON: {"name": {"width": 256, ...}}) says otherwise.
DEFAULT_RENDER_PRESETS = {"thumb": RenderPreset(width=256, height=256, fit="cover", format="auto"),
                          "preview": RenderPreset(width=1024, format="auto")}


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

    # Access (docs/SERVICE.md, "Keys, tenants, signing and limits"). auto: keys are needed once a bootstrap key
    # is set or any key was created with `tuner keys create`; off: open to anyone (local use only: the API
    # refuses to listen beyond loopback without keys); on: keys needed even before one exists.
    auth: Literal["auto", "on", "off"] = "auto"
    bootstrap_key: SecretStr | None = None  # a key accepted without a record (compose), for bootstrap_tenant
    bootstrap_tenant: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # Comma-separated HMAC keys for signed render URLs (the first signs, any verifies); empty: signing off.
    signing_keys: SecretStr | None = None
    # A signed URL from GET .../render-url lives this long unless `expires_in` says otherwise, and no signed URL
    # is accepted without an expiry or with one further ahead than signed_url_max_ttl_s.
    signed_url_ttl_s: int = Field(86_400, ge=1)
    signed_url_max_ttl_s: int = Field(30 * 86_400, ge=1)
    # Requests per second per tenant (a token bucket; the embedded mode counts per process), 0: no limit.
    rate_limit_per_s: float = Field(20.0, ge=0)
    rate_limit_burst: int = Field(100, ge=1)
    max_pending_jobs_per_tenant: int = Field(100, ge=1)  # a tenant's queued + running jobs; above: 429
    max_stored_bytes_per_tenant: int = Field(1024**3, ge=0)  # a tenant's blobs; above: 403. 0: no quota
    # Tenants whose API keys may read /metrics (comma-separated): the whole service's counters are an
    # operator's, not any tenant's. Without keys (local use) /metrics is open like everything else.
    metrics_tenants: str = ""
    # Failed authentications (401) allowed per client address a minute (a bucket of as many); beyond: 429.
    auth_failures_per_minute: float = Field(10.0, ge=0)
    # Comma-separated addresses (or CIDRs) of reverse proxies whose X-Forwarded-For names the client (the
    # rate limit for keyless and signed calls is per client address); empty: no proxy is believed.
    trusted_proxies: str = ""
    # The HTTP server's own limits (service/api/server.py, limits.py): headers and body deadlines, idle
    # keep-alive, and connections + requests at once (503 beyond).
    http_header_timeout_s: float = Field(10.0, gt=0)
    http_body_timeout_s: float = Field(60.0, gt=0)
    http_keep_alive_s: float = Field(5.0, gt=0)
    http_max_concurrency: int = Field(256, ge=1)
    # Server-Sent Event streams (GET /v1/jobs/{id}/events): open at once per tenant (429 beyond), the longest
    # one lasts (the client reconnects), and how often an open one checks its key and costs a request.
    event_streams_per_tenant: int = Field(8, ge=1)
    event_stream_max_s: float = Field(3600.0, gt=0)
    event_stream_recheck_s: float = Field(5.0, gt=0)
    # /readyz also needs a worker that beat within stale_after_s (set by `tuner serve`, whose API and worker
    # are one service; a separate `tuner api` is ready without workers, which may live elsewhere).
    ready_needs_worker: bool = False
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser ("*": any)

    # Uploads and encoding
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(16_000_000, ge=1)
    max_steps: int = Field(20_000, ge=1)
    default_steps: int | None = Field(None, ge=1)
    max_pending_jobs: int = Field(1000, ge=1)  # queued + running; above it uploads get 429
    fit_device: str = "auto"
    # After a fit the worker encodes the upload with JPEG, WebP and AVIF at the blob's bytes, for the page's
    # comparison (seconds of CPU per job: AVIF's quality search is most of it).
    comparisons: bool = True
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
    # Images above this size (longer side, shorter side) are fitted as overlapping tiles of at most this size,
    # one task per tile across the workers (issue 28; docs/SERVICE.md, "Large images"). None: the library's
    # working size (tuner_model/core/tiling.py). Lowered by tests, to tile tiny images.
    tile_working_size: tuple[int, int] | None = None

    # Rendering
    max_render_width: int = Field(8192, ge=1)
    max_render_height: int = Field(8192, ge=1)
    max_render_pixels: int = Field(16_777_216, ge=1)
    render_concurrency: int = Field(2, ge=1)  # simultaneous renders in one API process; more wait
    render_queue_max: int = Field(32, ge=0)  # renders that may wait for a slot; more get 429
    render_queue_timeout_s: float = Field(20.0, gt=0)  # a render waiting longer gets 429 with Retry-After
    render_timeout_s: float = Field(60.0, gt=0)  # a render still running after this stops (503)
    # The most work one render may ask for, in output pixels × network parameters (the multiply-adds of
    # evaluating every pixel exactly), checked before it starts: 422 above it. 2 CPU cores do ~1.5e10 a second.
    max_render_work: float = Field(1.0e12, gt=0)
    decoded_cache_entries: int = Field(16, ge=0)
    # Named renders: `render?preset=thumb` (docs/SERVICE.md, "Render parameters").
    render_presets: dict[str, RenderPreset] = Field(default_factory=lambda: dict(DEFAULT_RENDER_PRESETS))
    # Compile the renderer's fused sine in the background at start-up (seconds of CPU, needs a C++
    # compiler; renders are eager until it is ready, and stay eager if it fails): ~0.65x the render time.
    render_compile: bool = True

    # Storage lifecycle (local store; docs/SERVICE.md). The render cache is kept under this many bytes by
    # evicting the least recently used renders; 0 turns the cache off (nothing stored or read). Uploads are
    # needed only until their job finishes: older ones that no queued or running job uses are deleted.
    render_cache_max_bytes: int = Field(2 * 1024**3, ge=0)
    upload_retention_s: float = Field(86_400.0, gt=0)
    cache_sweep_interval_s: float = Field(60.0, gt=0)
    # Temporary files of crashed writers and blobs no image references (a job that failed after writing
    # its blob) are deleted by the sweeper once this old.
    orphan_grace_s: float = Field(3600.0, gt=0)

    # Worker: time limits, redelivery, recovery
    soft_time_limit_s: int = Field(3000, ge=1)
    hard_time_limit_s: int = Field(3300, ge=2)
    visibility_timeout_s: int | None = None  # None: hard limit + 10 minutes
    max_attempts: int = Field(3, ge=1)  # a job whose worker dies this many times is failed
    heartbeat_s: float = Field(5.0, gt=0)
    # A running job without heartbeat for this long is re-queued; with the scan interval, a dead worker's
    # job is running again within 25 s.
    stale_after_s: float = Field(20.0, gt=0)
    recovery_interval_s: float = Field(5.0, gt=0)
    # A queued job whose message was last sent this long ago is sent again, in case the broker lost it
    # (Redis restarted without persistence; the API died between saving the job and sending it). Longer
    # than a send takes; a duplicate costs a worker one database read.
    resend_queued_after_s: float = Field(300.0, gt=0)
    max_tasks_per_child: int = Field(20, ge=1)
    # A delivery runs the queued job fairest across tenants (fewest running, longest unserved), not
    # necessarily its message's own (worker/run.py): one tenant's backlog doesn't hold the workers.
    fair_scheduling: bool = True
    worker_concurrency: int = Field(1, ge=1)
    # Threads each fit uses. None: the machine's cores shared by the worker's fits at a time. Set it when
    # several worker processes share one machine (e.g. 1 each for two workers on 2 cores).
    fit_threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.soft_time_limit_s >= self.hard_time_limit_s:
            raise ValueError("TUNER_SOFT_TIME_LIMIT_S must be lower than TUNER_HARD_TIME_LIMIT_S")
        try:
            self.signing_key_bytes  # noqa: B018 - parsed (and cached) once, here, so a bad key stops start-up
        except ValueError as e:
            raise ValueError(f"TUNER_SIGNING_KEYS: {e}") from None
        if self.visibility_timeout_s is not None and self.visibility_timeout_s <= self.hard_time_limit_s:
            raise ValueError("TUNER_VISIBILITY_TIMEOUT_S must be above TUNER_HARD_TIME_LIMIT_S")
        for name in self.render_presets:
            if not PRESET_NAME.fullmatch(name):
                raise ValueError(f"TUNER_RENDER_PRESETS: {name!r} is not a preset name (letters, digits, - and _)")
        if self.bootstrap_key is not None and len(self.bootstrap_key.get_secret_value()) < MIN_KEY_BYTES:
            raise ValueError(f"TUNER_BOOTSTRAP_KEY must be at least {MIN_KEY_BYTES} characters (a guessable key "
                             "guards nothing)")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ValueError("TUNER_STALE_AFTER_S must be more than twice TUNER_HEARTBEAT_S")
        return self

    @cached_property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tuner.sqlite').resolve()}"

    @cached_property
    def signing_key_bytes(self) -> tuple[bytes, ...]:
        """TUNER_SIGNING_KEYS as HMAC keys (the first signs, all verify); empty when URL signing is off."""
        return parse_keys(self.signing_keys.get_secret_value() if self.signing_keys else None)

    @property
    def visibility_timeout(self) -> int:
        return self.visibility_timeout_s or self.hard_time_limit_s + 600
