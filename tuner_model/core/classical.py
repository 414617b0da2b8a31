"""The classical codecs we compare with, at the settings every comparison uses (Pillow: JPEG 4:2:0 with
optimized tables, WebP method 6, AVIF speed 4): one image at a quality, and one at a byte budget (the
largest quality whose file fits, found by bisection: file size grows with quality)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tuner_model.core.image_io import to_pil

CODECS = ("jpeg", "webp", "avif")
MEDIA = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif"}


def encode_at(pil: Image.Image, codec: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if codec == "jpeg":
        pil.save(buf, "JPEG", quality=quality, subsampling=2, optimize=True)
    elif codec == "webp":
        pil.save(buf, "WEBP", quality=quality, method=6)
    elif codec == "avif":
        pil.save(buf, "AVIF", quality=quality, speed=4)
    else:
        raise ValueError(f"unknown codec {codec!r}")
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """As core.metrics.psnr (peak 1, float64 mean), in numpy: the API imports this module and never torch."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def decode(data: bytes, mode: str) -> np.ndarray:
    arr = np.asarray(Image.open(io.BytesIO(data)).convert(mode), dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass(frozen=True)
class Comparison:
    codec: str
    quality: int
    data: bytes
    psnr: float


def at_most_bytes(image: np.ndarray, codec: str, max_bytes: int) -> Comparison | None:
    """The `codec` file of `image` with the highest quality (1..100) that takes at most `max_bytes`, and its
    PSNR; None when even quality 1 is larger."""
    pil = to_pil(image)
    lo, hi, best = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = encode_at(pil, codec, q)
        if len(data) <= max_bytes:
            best, lo = (q, data), q + 1
        else:
            hi = q - 1
    if best is None:
        return None
    q, data = best
    return Comparison(codec, q, data, round(psnr(decode(data, pil.mode), image), 4))
