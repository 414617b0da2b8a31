"""Fast rendering of TUNER networks on the CPU.

Direct evaluation costs, per pixel, m input sines, an n×m matrix–vector product and n hidden sines.
Two facts about TUNER make most of that avoidable: the input layer is separable on a pixel grid
(separable.py: exact up to float32 rounding), and the output is band-limited in practice, so an upscale
is resampled from a coarser exact grid after a per-network probe (resample.py). The sines are torch's or
a compiled polynomial (sines.py).

Networks other than TUNER, and devices other than the CPU, use direct evaluation (direct.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tuner_model.core import colour as colour_mod
from tuner_model.core.coords import FULL, Crop, axis_centres, extent
from tuner_model.render.direct import render, render_size
from tuner_model.render.resample import resampled
from tuner_model.render.separable import grid_values, supports


@torch.no_grad()
def render_fast(model: nn.Module, native: tuple[int, int], width: int | None = None, height: int | None = None,
                crop: Crop = FULL, colour: str = "rgb", device: torch.device | str = "cpu",
                resample: bool = True) -> np.ndarray:
    """Same contract as `render.render`: an (H, W, C) float32 image in [0, 1], RGB or gray.
    `resample=False` evaluates the network exactly at every output pixel (still separably)."""
    if not supports(model) or torch.device(device).type != "cpu":
        return render(model, native, width, height, crop, colour, device)
    w, h = render_size(native, width, height, crop)
    model = model.cpu().eval()
    colour_mod.check(colour, model.config.channels)
    sx, sy = extent(*native)
    xs = axis_centres(w, sx, crop.left, crop.right).to(torch.float64)
    ys = axis_centres(h, sy, crop.top, crop.bottom).to(torch.float64)
    steps = (2 * sx * (crop.right - crop.left) / w, 2 * sy * (crop.bottom - crop.top) / h)
    values = resampled(model, native, xs, ys, steps, colour) if resample else None
    if values is None:
        values = grid_values(model, xs, ys)
    rgb = colour_mod.inverse(values, colour).clamp_(0.0, 1.0)
    return rgb.numpy()
