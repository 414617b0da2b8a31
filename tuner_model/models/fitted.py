"""A fitted image: the network, the image's native size and colour space, and what was measured.
This is what a blob decodes to and what the service renders from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tuner_model.core.coords import FULL, Crop
from tuner_model.core.metrics import psnr
from tuner_model.models import ModelConfig
from tuner_model.render.fast import render_fast


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

    def render(self, width: int | None = None, height: int | None = None, crop: Crop = FULL,
               device: torch.device | str = "cpu") -> np.ndarray:
        # TUNER networks on the CPU take the fast path (faithful to direct evaluation: render/fast.py).
        return render_fast(self.model, self.native, width, height, crop, self.colour, device)

    def measure_psnr(self, image: np.ndarray, device: torch.device | str = "cpu") -> float:
        """PSNR of the native-size render (clamped to [0, 1]) against the original pixels."""
        return psnr(self.render(device=device), image)


__all__ = ["FittedImage"]
