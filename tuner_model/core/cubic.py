"""Cubic interpolation of a 2-D grid at any continuous position, separably.

The kernel is Keys' cubic with a = -0.5 (Catmull-Rom): interpolating (a grid read at its own sample
positions returns its values exactly), C1-continuous everywhere, four taps per axis. Positions are in
grid-index units (sample j sits at t = j); indices outside the grid are clamped to its border.

Training reads latent grids at the native pixel centres and rendering at any output grid or crop through
these same functions, so a render at the native size equals what was fitted, and any other size samples
the same continuous function.
"""

from __future__ import annotations

import torch


def taps(t: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 4) clamped indices and (n, 4) weights of the cubic kernel at positions t (n,)."""
    base = torch.floor(t)
    s = (t - base).to(torch.float32).unsqueeze(1)
    s2, s3 = s * s, s * s * s
    weights = torch.cat(
        (
            -0.5 * s3 + s2 - 0.5 * s,
            1.5 * s3 - 2.5 * s2 + 1.0,
            -1.5 * s3 + 2.0 * s2 + 0.5 * s,
            0.5 * s3 - 0.5 * s2,
        ),
        dim=1,
    )
    offsets = torch.arange(-1, 3, device=t.device)
    index = (base.to(torch.long).unsqueeze(1) + offsets).clamp_(0, size - 1)
    return index, weights


def along_rows(grid: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Interpolate the last-but-one axis of grid (..., h, w) at the rows given by taps: (..., n, w)."""
    out = grid.index_select(-2, index[:, 0]) * weights[:, 0:1]
    for k in range(1, 4):
        out = out + grid.index_select(-2, index[:, k]) * weights[:, k : k + 1]
    return out


def along_columns(grid: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Interpolate the last axis of grid (..., h, w) at the columns given by taps: (..., h, n)."""
    out = grid.index_select(-1, index[:, 0]) * weights[:, 0]
    for k in range(1, 4):
        out = out + grid.index_select(-1, index[:, k]) * weights[:, k]
    return out


def sample(grid: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor],
           columns: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """grid (..., h, w) read on the product of row and column positions (given as taps)."""
    h, w = grid.shape[-2:]
    n_rows, n_cols = rows[0].shape[0], columns[0].shape[0]
    # Cheaper axis first: the intermediate is (n_rows, w) or (h, n_cols).
    if n_rows * w <= h * n_cols:
        return along_columns(along_rows(grid, *rows), *columns)
    return along_rows(along_columns(grid, *columns), *rows)


def upsample(grid: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """grid (h, w) read at the pixel centres of the image it covers with cells of `factor` pixels,
    cropped to (height, width): the same values as `sample` there, computed as one polyphase
    convolution (factor² phases of a 5×5 window over the border-replicated grid, then a pixel shuffle),
    which is much cheaper than gathering, and so is its gradient."""
    if factor == 1:
        return grid[:height, :width]
    kernel = _phase_kernels(factor, grid.device)
    padded = torch.nn.functional.pad(grid[None, None], (2, 2, 2, 2), mode="replicate")
    phases = torch.nn.functional.conv2d(padded, kernel)
    return torch.nn.functional.pixel_shuffle(phases, factor)[0, 0, :height, :width]


_KERNELS: dict[tuple[int, str], torch.Tensor] = {}


def _phase_kernels(factor: int, device: torch.device) -> torch.Tensor:
    key = (factor, str(device))
    if key not in _KERNELS:
        # Output pixel i = factor·r + p reads taps floor(t)-1 .. floor(t)+2 at t = (i + ½)/factor - ½;
        # over the grid padded by 2 that is a 5-wide window starting at r.
        p = torch.arange(factor, dtype=torch.float64)
        t = (p + 0.5) / factor - 0.5
        index, weights = taps(t, 1 << 30)  # no clamping: padding does it
        start = (torch.floor(t).to(torch.long) + 1)  # window position of the first tap (0 or 1)
        one_d = torch.zeros(factor, 5)
        for k in range(4):
            one_d[torch.arange(factor), start + k] = weights[:, k]
        del index
        kernel = one_d[:, None, :, None] * one_d[None, :, None, :]  # (py, px, 5, 5)
        _KERNELS[key] = kernel.reshape(factor * factor, 1, 5, 5).to(device)
    return _KERNELS[key]
