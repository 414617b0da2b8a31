"""Rendering an image from its blob: output geometry (fit modes, crop, caps), a strong cache key, a
cache of rendered files in the blob store (bounded by service/sweeper.py), a small LRU of decoded
networks, a compute budget checked before a render starts, single flight for identical misses, and a few
render threads with a short bounded wait queue (overload is refused rather than queued without end).

Nothing here speaks HTTP: what a render refuses or stops with is one of its own errors (render_errors.py),
which service/api/problems.py answers with a status, headers and problem type."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from service.settings import Settings
from service.storage import BlobStore
from tuner_model.core.errors import ConfigError
from tuner_model.core.geometry import FULL, Crop, Fit, cover_crop, output_size
from tuner_model.core.image_io import MEDIA_TYPES, OUTPUT_FORMATS

from .render_cost import CostCache, RenderCost
from .render_errors import BadCrop, OverLimits, RenderBusy, RenderGone, RenderTimeout

# Bump whenever the pixels a render produces change (decoder, colour, encoder settings): it is part of
# every render ETag and cache key, so clients and caches never keep a stale rendering.
# 2: fast separable renderer, sinc resampling for upscales; 3: half-width mirror path, compiled sine.
RENDERER_VERSION = "3"

Format = Literal["png", "webp", "jpeg", "avif"]
RequestedFormat = Literal["png", "webp", "jpeg", "avif", "auto"]
# Media types come from the codec's own table, so the two can't drift apart.
MEDIA = {name: MEDIA_TYPES[OUTPUT_FORMATS[name]] for name in ("png", "webp", "jpeg", "avif")}
DEFAULT_QUALITY = {"png": None, "webp": 90, "jpeg": 90, "avif": 80}
# Other spellings a render's `format` takes (any case): the names other image services use.
FORMAT_ALIASES = {"jpg": "jpeg"}


@dataclass(frozen=True)
class RenderAsk:
    """What a render asks for, once the query, its aliases and a preset are merged (service/api/queries.py)."""

    width: int | None = None
    height: int | None = None
    fit: Fit = "contain"
    format: RequestedFormat = "png"
    quality: int | None = None
    crop: str | None = None
    dpr: float = 1.0

    def params(self) -> dict[str, str]:
        """The query that asks for this render by the canonical names (what a signed URL carries)."""
        values = {"width": self.width, "height": self.height, "fit": self.fit, "format": self.format,
                  "quality": self.quality, "crop": self.crop, "dpr": None if self.dpr == 1 else f"{self.dpr:g}"}
        return {k: str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class RenderPlan:
    width: int
    height: int
    crop: tuple[float, float, float, float]
    format: str
    quality: int | None

    def canonical(self) -> str:
        l, t, r, b = self.crop
        return (f"w={self.width}&h={self.height}&crop={l:.6f},{t:.6f},{r:.6f},{b:.6f}"
                f"&fmt={self.format}&q={self.quality if self.quality is not None else ''}")

    def cache_key(self, blob_digest: str, scope: str = "") -> str:
        """The render's key. With a `scope` (the image id, which is per tenant) the cache is the image's own:
        no tenant can learn from a hit, or from its speed, that another tenant holds the same picture; and
        the key starts with `render_prefix(scope)`, so deleting the image finds its renders."""
        inner = hashlib.sha256(f"{blob_digest}|{self.canonical()}|r{RENDERER_VERSION}".encode()).hexdigest()
        if not scope:
            return inner
        return render_prefix(scope) + hashlib.sha256(f"{scope}|{inner}".encode()).hexdigest()[:48]


def render_prefix(scope: str) -> str:
    """The first 16 hex digits of every render key of `scope` (an image id)."""
    return hashlib.sha256(f"renders|{scope}".encode()).hexdigest()[:16]


def negotiate(requested: RequestedFormat, accept: str | None) -> str:
    """`auto` picks AVIF, then WebP, from the request's Accept header, else PNG (the answer then varies with
    Accept); any other format is taken as asked."""
    if requested != "auto":
        return requested
    accepted = {part.split(";")[0].strip().lower() for part in (accept or "").split(",")}
    return "avif" if "image/avif" in accepted else "webp" if "image/webp" in accepted else "png"


def parse_crop(text: str | None) -> Crop:
    """The crop parameter as a Crop (which checks its bounds: the one place a crop is validated)."""
    if text is None:
        return FULL
    try:
        l, t, r, b = (float(v) for v in text.split(","))
    except ValueError:
        raise BadCrop("crop must be four comma-separated fractions: left,top,right,bottom") from None
    try:
        return Crop(l, t, r, b)
    except ConfigError as e:
        raise BadCrop(str(e)) from None


def plan(native: tuple[int, int], ask: RenderAsk, fmt: Format, settings: Settings) -> RenderPlan:
    """One of width/height keeps the aspect ratio of the (cropped) region; both: `contain` fits inside,
    `cover` fills exactly by trimming the region around its centre, `fill` stretches. `dpr` multiplies the
    sizes asked for (the native size when neither is given); the caps apply to the result. The size is the
    library's rule (core/geometry.py), the caps the service's own."""
    crop = parse_crop(ask.crop)
    width = None if ask.width is None else max(1, round(ask.width * ask.dpr))
    height = None if ask.height is None else max(1, round(ask.height * ask.dpr))
    w, h = output_size(native, width, height, crop, ask.fit, ask.dpr)
    if width is not None and height is not None and ask.fit == "cover":
        crop = cover_crop(native, crop, width, height)
    aw, ah = max(w, width or 0), max(h, height or 0)  # the caps hold what was asked for too (OpenAPI's maximum)
    if aw > settings.max_render_width or ah > settings.max_render_height or w * h > settings.max_render_pixels:
        raise OverLimits(f"{aw}x{ah} is over the render limits (width <= {settings.max_render_width}, "
                         f"height <= {settings.max_render_height}, area <= {settings.max_render_pixels} pixels)")
    q = ask.quality if ask.quality is not None and fmt != "png" else DEFAULT_QUALITY[fmt]
    return RenderPlan(w, h, (crop.left, crop.top, crop.right, crop.bottom), fmt, q)


# Seconds per output megapixel of the output image's encode (Pillow, one core, content that compresses
# badly; AVIF's ~1.1 s is issue 24's measurement), and the multiply-adds a second that max_render_work is
# counted in: the encode is priced in the render budget and must fit in the render's time limit.
ENCODE_SECONDS_PER_MPIXEL = {"png": 0.15, "webp": 0.25, "jpeg": 0.05, "avif": 1.2}
WORK_PER_SECOND = 1.5e10


def encode_seconds(p: RenderPlan) -> float:
    return p.width * p.height * ENCODE_SECONDS_PER_MPIXEL.get(p.format, 1.2) / 1e6


def check_work(p: RenderPlan, cost: int | RenderCost, settings: Settings) -> None:
    """Refuses a render whose exact evaluation would cost more than the budget, before any work: the
    output pixels × the network's parameters (its multiply-adds per pixel, near enough; for an image fitted
    as tiles, only the tiles that meet the requested region, each over the output pixels in its blend
    support: RenderCost), plus the output encode's time in the same unit."""
    cost = cost if isinstance(cost, RenderCost) else RenderCost(cost)
    pixels = p.width * p.height
    encode = ENCODE_SECONDS_PER_MPIXEL.get(p.format, 1.2) * 1e-6 * WORK_PER_SECOND  # per output pixel
    work = cost.work(p.width, p.height, p.crop) + pixels * encode
    if work > settings.max_render_work:
        most = int(settings.max_render_work // (work / pixels))
        if cost.grid is None:
            what = f"this {cost.parameters}-parameter network"
        else:
            meeting = cost.meeting(p.width, p.height, p.crop)
            what = (f"this region of a tiled image ({len(meeting)} of its {cost.grid.count} tiles, "
                    f"{sum(cost.tiles[k] for k in meeting)} parameters)")
        raise OverLimits(f"a {p.width}x{p.height} render of {what} is over the render budget; ask for at "
                         f"most {most} pixels")


class _Flight:
    """One render and every request waiting for it (identical concurrent misses render once)."""

    def __init__(self) -> None:
        self.result: Future[bytes] = Future()
        self.clients: list[threading.Event] = []  # set when that request's client has gone

    def abandoned(self) -> bool:
        return all(gone.is_set() for gone in list(self.clients))


class Renderer:
    """Renders on a few threads (render_concurrency); up to render_queue_max more wait their turn, each for at
    most render_queue_timeout_s; beyond that, RenderBusy. A render stops when every client asking for it has gone or
    after render_timeout_s."""

    def __init__(self, settings: Settings, store: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self._pool = ThreadPoolExecutor(settings.render_concurrency, thread_name_prefix="render")
        self._flights: dict[str, _Flight] = {}
        self._pending = 0  # renders submitted and not finished (running + waiting)
        self._decoded: OrderedDict[str, Any] = OrderedDict()
        self._costs = CostCache(store)
        self._lock = threading.Lock()
        self.shared = 0  # requests answered by another request's render (single flight)

    @property
    def caching(self) -> bool:
        return self.settings.render_cache_max_bytes > 0

    def cached(self, key: str) -> bytes | None:
        """The cached render, or None (also when the sweeper deleted it meanwhile: a miss, never an error)."""
        from service.storage import BlobNotFound

        if not self.caching:
            return None
        try:
            data = self.store.get(f"renders/{key}")
        except BlobNotFound:
            return None
        if self.store.lists_cheaply:
            self.store.touch(f"renders/{key}")  # recency for the sweeper's LRU eviction
        return data

    def submit(self, blob_digest: str, p: RenderPlan, gone: threading.Event, key: str | None = None) -> Future[bytes]:
        """The render's future: a new one, or the one already running for the same key (by default the plan's
        unscoped key). Raises RenderBusy when the wait queue is full. `gone` is set by the caller when its client
        disconnects."""
        key = key or p.cache_key(blob_digest)
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.clients.append(gone)
                self.shared += 1
                return flight.result
            if self._pending >= self.settings.render_concurrency + self.settings.render_queue_max:
                raise RenderBusy("too many renders waiting; retry shortly", retry_after_s=2)
            flight = self._flights[key] = _Flight()
            flight.clients.append(gone)
            self._pending += 1
        self._pool.submit(self._run, key, blob_digest, p, flight, time.monotonic())
        return flight.result

    def _run(self, key: str, blob_digest: str, p: RenderPlan, flight: _Flight, queued_at: float) -> None:
        try:
            waited = time.monotonic() - queued_at
            if flight.abandoned():
                raise RenderGone("the client went away before its render started")
            if waited > self.settings.render_queue_timeout_s:
                raise RenderBusy(f"the render waited {waited:.0f} s for a free renderer; retry shortly",
                                 retry_after_s=5)
            flight.result.set_result(self._render_now(blob_digest, p, flight, key))
        except BaseException as e:  # noqa: BLE001 - every waiting request gets the outcome
            flight.result.set_exception(e)
        finally:
            with self._lock:
                self._flights.pop(key, None)
                self._pending -= 1

    def _render_now(self, blob_digest: str, p: RenderPlan, flight: _Flight, key: str) -> bytes:
        from tuner_model.core.errors import Stopped
        from tuner_model.core.image_io import encode_image
        from tuner_model.core.stop import stop_when
        from tuner_model.render.fitted import render_image

        deadline = time.monotonic() + self.settings.render_timeout_s

        def stop() -> str | None:
            if flight.abandoned():
                return "client gone"
            return "time limit" if time.monotonic() > deadline else None

        try:
            with stop_when(stop):
                fitted = self._fitted(blob_digest)
                pixels = render_image(fitted, p.width, p.height, Crop(*p.crop), device="cpu")
        except Stopped as e:
            if str(e) == "client gone":
                raise RenderGone("the client went away; the render was stopped") from None
            raise RenderTimeout(f"the render ran past its time limit ({self.settings.render_timeout_s:g} s); "
                                "ask for a smaller size", retry_after_s=60) from None
        # The encode can't be stopped half-way: it starts only if it fits in the time the render has left.
        if time.monotonic() + encode_seconds(p) > deadline:
            raise RenderTimeout(f"the render ran past its time limit ({self.settings.render_timeout_s:g} s); "
                                "ask for a smaller size or a faster format", retry_after_s=60)
        data = encode_image(pixels, p.format, p.quality)
        if self.caching and len(data) <= self.settings.render_cache_max_bytes:  # a larger one would go at once
            self.store.put(f"renders/{key}", data)
        return data

    def cost(self, blob_digest: str, parameters: int) -> RenderCost:
        """The blob's RenderCost (`parameters`: the image row's count), read once per process (render_cost.py)."""
        return self._costs.get(blob_digest, parameters)

    def close(self) -> None:
        """Stops the render threads (when the app shuts down); renders still waiting are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fitted(self, blob_digest: str) -> Any:
        from tuner_model.codec import decode_blob

        with self._lock:
            if blob_digest in self._decoded:
                self._decoded.move_to_end(blob_digest)
                return self._decoded[blob_digest]
        fitted = decode_blob(self.store.get(f"blobs/{blob_digest}"))
        if self.settings.decoded_cache_entries > 0:
            with self._lock:
                self._decoded[blob_digest] = fitted
                while len(self._decoded) > self.settings.decoded_cache_entries:
                    self._decoded.popitem(last=False)
        return fitted
