"""An output grid's region and size: the crop (validated here, once) and the one rule that turns the width and
height asked for into the size rendered. Plain Python, no torch: the API plans a render with it (and answers
a bad request) before it loads any of the renderer. Each caller holds the result to its own limits: the
library to MAX_RENDER_PIXELS (render/direct.py), the service to its settings (service/api/render.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuner_model.core.errors import ConfigError

Fit = Literal["contain", "cover", "fill"]


@dataclass(frozen=True)
class Crop:
    """A region of the image in fractions of its width and height: 0 <= left < right <= 1, etc."""

    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self) -> None:
        vals = (self.left, self.top, self.right, self.bottom)
        if not all(0.0 <= v <= 1.0 for v in vals) or self.left >= self.right or self.top >= self.bottom:
            raise ConfigError("crop must satisfy 0 <= left < right <= 1 and 0 <= top < bottom <= 1")


FULL = Crop(0.0, 0.0, 1.0, 1.0)


def output_size(native: tuple[int, int], width: int | None, height: int | None, crop: Crop = FULL,
                fit: Fit = "fill", scale: float = 1.0) -> tuple[int, int]:
    """The output size of the (cropped) region of an image of `native` = (width, height) pixels: both given →
    `fill` and `cover` as given (cover_crop trims the region to match), `contain` the largest size within both
    that keeps the region's aspect ratio; one given → the other keeps that aspect ratio; neither → the region's
    native size times `scale` (a device pixel ratio: sizes given are scaled by the caller). No upper limit."""
    nw, nh = native
    rw, rh = nw * (crop.right - crop.left), nh * (crop.bottom - crop.top)
    for name, v in (("width", width), ("height", height)):
        if v is not None and v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    if width is None and height is None:
        w, h = round(rw * scale), round(rh * scale)
    elif height is None:
        w, h = width, round(width * rh / rw)
    elif width is None:
        w, h = round(height * rw / rh), height
    elif fit == "contain":
        s = min(width / rw, height / rh)
        w, h = min(width, round(rw * s)), min(height, round(rh * s))
    else:  # fill, cover
        w, h = width, height
    return max(1, int(w)), max(1, int(h))


def cover_crop(native: tuple[int, int], crop: Crop, width: int, height: int) -> Crop:
    """The region `cover` renders at width×height: `crop` trimmed about its centre, on the side that is too
    long, to the output's aspect ratio (so the output is filled without stretching)."""
    l, t, r, b = crop.left, crop.top, crop.right, crop.bottom
    rw, rh = native[0] * (r - l), native[1] * (b - t)
    want = width / height
    if rw / rh > want:  # region too wide: trim left and right
        cut = (r - l) * (1 - (rh * want) / rw) / 2
        l, r = l + cut, r - cut
    else:
        cut = (b - t) * (1 - (rw / want) / rh) / 2
        t, b = t + cut, b - cut
    return Crop(l, t, r, b)
