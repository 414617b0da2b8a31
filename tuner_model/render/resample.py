"""Upscaled renders resampled from an exact grid.

The output is band-limited in practice (Theorem 1: a Fourier series on (2π/p)Z²; Theorem 2: the harmonics
of the bounded hidden layer decay like (c/2)^n/n!). An upscaled render therefore evaluates the network on a
grid that resolves HARMONICS × its input band limit, with margin, and resamples with a Kaiser-windowed sinc.
Because a blob's weights could in principle carry more harmonic energy than a fitted image does, each
network is first probed: resampled values are compared with exact ones at scattered points, and resampling
is used only when they agree to PROBE_DB (well above the 45 dB the service promises); otherwise the render
is evaluated exactly at every pixel.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
from torch import nn

from tuner_model.core import colour as colour_mod
from tuner_model.core.coords import extent
from tuner_model.render.separable import grid_values, is_symmetric

HARMONICS = 3.0  # the evaluation grid resolves this multiple of the largest input frequency...
OVERSAMPLING = 1.25  # ...with this margin (measured: docs/PERFORMANCE.md, "Speed")
TAPS = 12  # windowed-sinc taps
KAISER_BETA = 8.0
PROBE_DB = 55.0  # resampled vs exact at the probe points, after the colour transform


def eval_spacing(model: nn.Module) -> float:
    """The grid spacing (domain units) that resolves HARMONICS^depth × the largest input frequency."""
    cfg = model.config
    kmax = float(model.k.abs().max())
    f_max = HARMONICS ** len(cfg.hidden) * kmax / cfg.period  # cycles per unit length
    return 1.0 / (2.0 * f_max * OVERSAMPLING)


def eval_axis(out: torch.Tensor, step: float, h: float) -> torch.Tensor | None:
    """The points of the global lattice hZ (anchored at 0, whatever the crop, so that a tile of a render
    is the same pixels as the render's region) that the kernel needs around `out`, or None when the
    output's pixel `step` is no finer than h (that axis is then evaluated exactly at the output points)."""
    if step >= h:
        return None
    first = math.floor(float(out[0]) / h) - TAPS // 2
    last = math.floor(float(out[-1]) / h) + TAPS // 2 + 1
    if is_symmetric(out):  # a mirror-symmetric lattice takes grid_values' half-width path
        first, last = -max(-first, last), max(-first, last)
    return h * torch.arange(first, last + 1, dtype=torch.float64)


def resampled(model: nn.Module, native: tuple[int, int], xs: torch.Tensor, ys: torch.Tensor,
               steps: tuple[float, float], colour: str) -> torch.Tensor | None:
    """Values at (xs, ys) resampled from an exact grid on the lattice hZ², or None when the output is no
    denser than the lattice or the network failed its probe."""
    h = eval_spacing(model)
    gx, gy = eval_axis(xs, steps[0], h), eval_axis(ys, steps[1], h)
    if gx is None and gy is None:
        return None
    if not passes_probe(model, native, colour, h):
        return None
    return resample_grid(model, xs, ys, h, gx, gy)


def resample_grid(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, h: float,
                  gx: torch.Tensor | None, gy: torch.Tensor | None) -> torch.Tensor:
    """Exact values on the grid (gx or xs) × (gy or ys), resampled along the axes that have a g."""
    v = grid_values(model, xs if gx is None else gx, ys if gy is None else gy)  # (He, We, C)
    if gx is not None:  # along x: rows of the transposed image, then back to (He, W, C)
        v = _resample_rows(v.transpose(0, 1).contiguous(), gx, xs, h).transpose(0, 1).contiguous()
    if gy is not None:
        v = _resample_rows(v, gy, ys, h)
    return v


def _resample_rows(v: torch.Tensor, grid: torch.Tensor, out: torch.Tensor, h: float) -> torch.Tensor:
    """Windowed-sinc interpolation along dim 0 of `v` from the uniform `grid` (spacing h) to `out`,
    as dense products over blocks of the banded kernel matrix."""
    origin = round(float(grid[0]) / h)  # grid[i] = (origin + i)·h
    t = out / h  # position in lattice units
    cell = torch.floor(t).to(torch.int64)
    lattice = cell[:, None] - (TAPS // 2 - 1) + torch.arange(TAPS)[None, :]
    u = t[:, None] - lattice.to(torch.float64)
    idx = lattice - origin
    wts = torch.sinc(u) * _kaiser(u / (TAPS / 2))
    wts = (wts / wts.sum(dim=1, keepdim=True)).to(torch.float32)  # exact on constants
    flat = v.reshape(v.shape[0], -1)
    n_out = out.numel()
    res = torch.empty((n_out, flat.shape[1]), dtype=torch.float32)
    step = float(out[1] - out[0]) if n_out > 1 else h
    block = int(min(512, max(16, 2 * TAPS * h / step)))  # a block spans about 3·TAPS grid points
    for lo in range(0, n_out, block):
        hi = min(n_out, lo + block)
        g0, g1 = int(idx[lo, 0]), int(idx[hi - 1, -1]) + 1
        k = torch.zeros((hi - lo, g1 - g0), dtype=torch.float32)
        k.scatter_(1, idx[lo:hi] - g0, wts[lo:hi])
        torch.matmul(k, flat[g0:g1], out=res[lo:hi])
    return res.reshape(n_out, *v.shape[1:])


def _kaiser(r: torch.Tensor) -> torch.Tensor:
    """The Kaiser window on r in [-1, 1] (zero outside)."""
    arg = torch.clamp(1.0 - r * r, min=0.0)
    return torch.special.i0(KAISER_BETA * torch.sqrt(arg)) / float(torch.special.i0(torch.tensor(KAISER_BETA)))



# ------------------------------------------------------------------------------------------------- probing

_probe_cache: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
_probe_lock = threading.Lock()
PROBE_WINDOWS = 8
PROBE_POINTS = 24  # per side of a window


def passes_probe(model: nn.Module, native: tuple[int, int], colour: str, h: float) -> bool:
    """Whether resampling from spacing h reproduces exact evaluation to PROBE_DB at scattered points of the
    image (memoised per network, invalidated when its weights change in place)."""
    version = tuple(p._version for p in model.parameters())
    key = (version, native, colour, round(h, 12))
    with _probe_lock:
        cached = _probe_cache.get(model)
        if cached is not None and key in cached:
            return cached[key]
    ok = probe_psnr(model, native, colour, h) >= PROBE_DB
    with _probe_lock:
        entry = _probe_cache.setdefault(model, {})
        entry[key] = ok
    return ok


def probe_psnr(model: nn.Module, native: tuple[int, int], colour: str, h: float) -> float:
    """PSNR (dB) of resampled against exact values in PROBE_WINDOWS small windows spread over the image,
    sampled at a spacing incommensurate with h so that every kernel phase is exercised."""
    sx, sy = extent(*native)
    fine = h * 0.3819660112501051  # 1/φ²
    half = fine * PROBE_POINTS / 2
    sq = 0.0
    count = 0
    for i in range(PROBE_WINDOWS):
        # A low-discrepancy (golden-ratio) sequence of window centres over the image domain.
        cx = -sx + 2 * sx * ((0.5 + i * 0.6180339887498949) % 1.0)
        cy = -sy + 2 * sy * ((0.5 + i * 0.7548776662466927) % 1.0)
        px = cx - half + fine * torch.arange(PROBE_POINTS, dtype=torch.float64)
        py = cy - half + fine * torch.arange(PROBE_POINTS, dtype=torch.float64)
        exact = colour_mod.inverse(grid_values(model, px, py), colour).clamp_(0.0, 1.0)
        approx = resample_grid(model, px, py, h, eval_axis(px, fine, h), eval_axis(py, fine, h))
        approx = colour_mod.inverse(approx, colour).clamp_(0.0, 1.0)
        sq += float(((exact.double() - approx.double()) ** 2).sum())
        count += exact.numel()
    mse = sq / max(1, count)
    return float("inf") if mse <= 0 else 10 * math.log10(1.0 / mse)
