"""Rendering an image from its blob: output geometry (fit modes, crop, caps), a strong cache key, a
cache of rendered files in the blob store (bounded by service/sweeper.py), a small LRU of decoded
networks, and a bound on concurrent renders so that overload answers 429 rather than queueing without end."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from service.settings import Settings
from service.storage import BlobStore
from tuner_model.core.image_io import MEDIA_TYPES, OUTPUT_FORMATS

from .problems import ProblemError

# Bump whenever the pixels a render produces change (decoder, colour, encoder settings): it is part of
# every render ETag and cache key, so clients and caches never keep a stale rendering.
# 2: fast separable renderer, sinc resampling for upscales; 3: half-width mirror path, compiled sine.
RENDERER_VERSION = "3"

Fit = Literal["contain", "cover", "fill"]
Format = Literal["png", "webp", "jpeg", "avif"]
# Media types come from the codec's own table, so the two can't drift apart.
MEDIA = {name: MEDIA_TYPES[OUTPUT_FORMATS[name]] for name in ("png", "webp", "jpeg", "avif")}
DEFAULT_QUALITY = {"png": None, "webp": 90, "jpeg": 90, "avif": 80}


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

    def cache_key(self, blob_digest: str) -> str:
        return hashlib.sha256(f"{blob_digest}|{self.canonical()}|r{RENDERER_VERSION}".encode()).hexdigest()


def parse_crop(text: str | None) -> tuple[float, float, float, float]:
    if text is None:
        return (0.0, 0.0, 1.0, 1.0)
    try:
        l, t, r, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ProblemError(422, "crop must be four comma-separated fractions: left,top,right,bottom") from None
    if not (0 <= l < r <= 1 and 0 <= t < b <= 1):
        raise ProblemError(422, "crop must satisfy 0 <= left < right <= 1 and 0 <= top < bottom <= 1")
    return (l, t, r, b)


def plan(native: tuple[int, int], width: int | None, height: int | None, fit: Fit, fmt: Format,
         quality: int | None, crop_text: str | None, settings: Settings) -> RenderPlan:
    """One of width/height keeps the aspect ratio of the (cropped) region; both: `contain` fits inside,
    `cover` fills exactly by trimming the region around its centre, `fill` stretches."""
    l, t, r, b = parse_crop(crop_text)
    rw, rh = native[0] * (r - l), native[1] * (b - t)
    if width is None and height is None:
        w, h = round(rw), round(rh)
    elif height is None:
        w, h = width, round(width * rh / rw)
    elif width is None:
        w, h = round(height * rw / rh), height
    elif fit == "fill":
        w, h = width, height
    elif fit == "contain":
        s = min(width / rw, height / rh)
        w, h = min(width, round(rw * s)), min(height, round(rh * s))
    else:  # cover
        w, h = width, height
        want = width / height
        if rw / rh > want:  # region too wide: trim left and right
            cut = (r - l) * (1 - (rh * want) / rw) / 2
            l, r = l + cut, r - cut
        else:
            cut = (b - t) * (1 - (rw / want) / rh) / 2
            t, b = t + cut, b - cut
    w, h = max(1, int(w)), max(1, int(h))
    if w > settings.max_render_width or h > settings.max_render_height or w * h > settings.max_render_pixels:
        raise ProblemError(422, f"{w}x{h} is over the render limits (width <= {settings.max_render_width}, "
                                f"height <= {settings.max_render_height}, "
                                f"area <= {settings.max_render_pixels} pixels)")
    q = quality if quality is not None and fmt != "png" else DEFAULT_QUALITY[fmt]
    return RenderPlan(w, h, (l, t, r, b), fmt, q)


class Renderer:
    def __init__(self, settings: Settings, store: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self._slots = threading.BoundedSemaphore(settings.render_concurrency)
        self._decoded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

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

    def render(self, blob_digest: str, p: RenderPlan) -> bytes:
        """Render and encode (blocking: call it from a worker thread), then keep it in the render cache."""
        if not self._slots.acquire(blocking=False):
            raise ProblemError(429, "too many renders in progress; retry shortly", headers={"Retry-After": "1"})
        try:
            from tuner_model.core.coords import Crop
            from tuner_model.core.image_io import encode_image

            fitted = self._fitted(blob_digest)
            pixels = fitted.render(p.width, p.height, Crop(*p.crop), device="cpu")
            data = encode_image(pixels, p.format, p.quality)
        finally:
            self._slots.release()
        if self.caching and len(data) <= self.settings.render_cache_max_bytes:  # a larger one would go at once
            self.store.put(f"renders/{p.cache_key(blob_digest)}", data)
        return data

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
