"""From an image and what the user asks for (a rate, a quality, or nothing) to a fitted network and its
blob. This is the one entry point the CLI and the worker call; rate control lives behind it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .codec import encode_blob
from .errors import ConfigError
from .fit import FitOptions, FitProgress
from .frequencies import cycles_to_k
from .image_model import FittedImage, fit_image
from .models import ModelConfig

DEFAULT_STEPS = 1000


@dataclass(frozen=True)
class EncodeSettings:
    bpp: float | None = None  # target rate: the blob stays at or under it
    psnr: float | None = None  # target quality in dB
    steps: int | None = None  # override the planned number of steps
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bpp is not None and not 0.01 <= self.bpp <= 64:
            raise ConfigError(f"bpp must be in [0.01, 64], got {self.bpp}")
        if self.psnr is not None and not 10 <= self.psnr <= 80:
            raise ConfigError(f"psnr must be in [10, 80] dB, got {self.psnr}")
        if self.bpp is not None and self.psnr is not None:
            raise ConfigError("give a target bpp or a target psnr, not both")
        if self.steps is not None and not 1 <= self.steps <= 1_000_000:
            raise ConfigError(f"steps must be in 1..1000000, got {self.steps}")


def default_config(width: int, height: int, channels: int) -> ModelConfig:
    """Network for an image when nothing else is asked: inputs sampled up to a third of Nyquist along
    the longer side (harmonics up to 3× then reach it, TUNER.md §5)."""
    period = 4.0
    bandlimit = cycles_to_k(max(width, height) / 6, period)
    m = 64 if width * height <= 128 * 128 else 128 if width * height <= 512 * 512 else 192
    return ModelConfig(arch="tuner", channels=channels, input_width=m, hidden=(m,), period=period,
                       bandlimit=max(bandlimit, 10), block_limit=min(10, max(bandlimit, 10)))


def encode(image: np.ndarray, settings: EncodeSettings = EncodeSettings(),
           progress: Callable[[FitProgress], None] | None = None,
           should_cancel: Callable[[], bool] | None = None) -> tuple[FittedImage, bytes]:
    h, w, c = image.shape
    config = default_config(w, h, c)
    options = FitOptions(steps=settings.steps or DEFAULT_STEPS, device=settings.device, seed=settings.seed)
    fitted = fit_image(image, config, options, colour="gray" if c == 1 else "rgb",
                       progress=progress, should_cancel=should_cancel)
    blob = encode_blob(fitted)
    return fitted, blob
