"""Rendering a latent-grid TUNER at any size and crop, in row bands so memory stays bounded."""

from __future__ import annotations

import numpy as np
import torch

from tuner_model.core.coords import FULL, Crop
from tuner_model.core.stop import checkpoint
from tuner_model.models.latent import LatentTunerNet
from tuner_model.render.direct import render_size

BAND_PIXELS = 1 << 18  # output pixels per band: ~(2^18 × the first layer's width) floats of activations


@torch.no_grad()
def render_latent(net: LatentTunerNet, width: int | None = None, height: int | None = None,
                  crop: Crop = FULL) -> np.ndarray:
    """(H, W, C) float pixels in [0, 1]; one of width/height keeps the aspect ratio."""
    out_w, out_h = render_size(net.native, width, height, crop)
    xs, ys, row_taps, col_taps = net.axes(out_w, out_h, crop)
    grids = list(net.latents)
    rows_per_band = max(1, BAND_PIXELS // out_w)
    out = np.empty((out_h, out_w, net.config.channels), dtype=np.float32)
    for top in range(0, out_h, rows_per_band):
        checkpoint()
        band = slice(top, min(out_h, top + rows_per_band))
        band_rows = [(index[band], weights[band]) for index, weights in row_taps]
        values = net.forward_grid(grids, (xs, ys[band], band_rows, col_taps))
        out[band] = values.clamp(0, 1).reshape(-1, out_w, net.config.channels).numpy()
    return out
