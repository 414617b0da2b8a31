"""A fitted image: the network, the image's native size and colour space, and what was measured.
This is what a blob decodes to and what the service renders from. Rendering it is render/fitted.py's
(render_image, measure_psnr): render/ depends on models/, never the other way."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

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


__all__ = ["FittedImage"]
