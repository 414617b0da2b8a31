"""Rendering a FittedImage (what a blob decodes to, what a fit returns): its network at any size and crop, and
its PSNR against the original pixels; an image fitted as tiles (a TiledImage, issue 28) through
render/tiled.py, so the CLI and the service render either. Here rather than on FittedImage, so that models/
holds the data and render/ depends on models/, never the other way."""

from __future__ import annotations

import numpy as np
import torch

from tuner_model.core.coords import FULL, Crop
from tuner_model.core.metrics import psnr
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage
from tuner_model.render.fast import render_fast
from tuner_model.render.tiled import render_tiled


def render_image(fitted: FittedImage | TiledImage, width: int | None = None, height: int | None = None,
                 crop: Crop = FULL, device: torch.device | str = "cpu") -> np.ndarray:
    """An (H, W, C) float32 image in [0, 1], RGB or gray: one of width/height keeps the (cropped) aspect ratio,
    neither is the native size. TUNER networks on the CPU take the fast path (faithful to direct evaluation:
    render/fast.py), any other network or device direct evaluation; tiles are rendered one by one and blended
    (render/tiled.py)."""
    if isinstance(fitted, TiledImage):
        return render_tiled(fitted, width, height, crop, device)
    return render_fast(fitted.model, fitted.native, width, height, crop, fitted.colour, device)


def measure_psnr(fitted: FittedImage | TiledImage, image: np.ndarray, device: torch.device | str = "cpu") -> float:
    """PSNR of the native-size render (clamped to [0, 1]) against the original pixels."""
    return psnr(render_image(fitted, device=device), image)


__all__ = ["measure_psnr", "render_image"]
