"""A fitted image: the network, the image's native size and colour space, and what was measured.
This is what a blob decodes to and what the service renders from. Rendering it is render/fitted.py's
(render_image, measure_psnr): render/ depends on models/, not the other way (but for the two transitional
methods below)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tuner_model.core.coords import FULL, Crop
from tuner_model.core.metrics import psnr
from tuner_model.models import ModelConfig


@dataclass
class FittedImage:
    config: ModelConfig
    width: int
    height: int
    model: nn.Module
    colour: str = "rgb"
    meta: dict = field(default_factory=dict)  # psnr (dB, native size), steps, seconds, ...

    @property
    def native(self) -> tuple[int, int]:
        return (self.width, self.height)

    # Transitional (issue 26): the last callers of these two are in train/ and rate/ (fit.py, batched.py,
    # pipeline.py, coarsen.py) and two tests. Once they call render/fitted.py (the same arithmetic), these go,
    # and with them models/' one import from render/ (lazy meanwhile: importing models loads no renderer).
    def render(self, width: int | None = None, height: int | None = None, crop: Crop = FULL,
               device: torch.device | str = "cpu") -> np.ndarray:
        from tuner_model.render.fast import render_fast

        return render_fast(self.model, self.native, width, height, crop, self.colour, device)

    def measure_psnr(self, image: np.ndarray, device: torch.device | str = "cpu") -> float:
        return psnr(self.render(device=device), image)


__all__ = ["FittedImage"]
