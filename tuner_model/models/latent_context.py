"""The latents' entropy model: a Laplace per latent whose mean and scale come from its causally decoded
neighbours (a checkerboard context, so each half of a grid decodes in one vectorized call).

Grids decode from the coarsest to the finest. In each grid, the anchors ((i + j) even) see the coarser
grid's value at their position (nearest: parent (i//2, j//2)); then the others see their four anchor
neighbours (up, down, left, right; zero outside the grid) and the parent. With the context c:

    μ = Σ_k α_k c_k            log b = β_0[level] + Σ_k β_k |c_k|

α and β are shared by every grid (one set for anchors, one for the others) and β_0 is per grid. They are
stored as integers in units of 1/WEIGHT_SCALE, and log b is rounded to units of 1/SCALE_STEPS before the
table lookup, so the encoder and the decoder compute the same model from integers: exactly, on any
machine. The coarsest grid has no parent: its anchors see zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

WEIGHT_SCALE = 64
SCALE_STEPS = 8
LOG_SCALE_RANGE = (-40, 64)  # log b in [-5, 8] in units of 1/SCALE_STEPS
ANCHOR_FEATURES = 1  # parent
OTHER_FEATURES = 5  # up, down, left, right, parent
MAX_WEIGHT = 1 << 14


def scale_table() -> np.ndarray:
    lo, hi = LOG_SCALE_RANGE
    return np.exp(np.arange(lo, hi + 1, dtype=np.float64) / SCALE_STEPS).astype(np.float16).astype(np.float64)


def anchor_mask(h: int, w: int) -> np.ndarray:
    i, j = np.indices((h, w))
    return (i + j) % 2 == 0


class ContextModel(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.anchor_mean = nn.Parameter(torch.zeros(ANCHOR_FEATURES))
        self.anchor_scale = nn.Parameter(torch.zeros(ANCHOR_FEATURES))
        self.other_mean = nn.Parameter(torch.zeros(OTHER_FEATURES))
        self.other_scale = nn.Parameter(torch.zeros(OTHER_FEATURES))
        self.offsets = nn.Parameter(torch.zeros(2, levels))  # β_0 per grid: anchors, others

    def quantized(self) -> dict[str, torch.Tensor]:
        """The parameters as stored (integers / WEIGHT_SCALE), with straight-through gradients."""
        out = {}
        for name, p in self.named_parameters():
            q = torch.round(p * WEIGHT_SCALE).clamp(-MAX_WEIGHT, MAX_WEIGHT) / WEIGHT_SCALE
            out[name] = p + (q - p).detach()
        return out

    def bits(self, coded: list[torch.Tensor], context: list[torch.Tensor]) -> torch.Tensor:
        """Code length of `coded` (the latents as the rate sees them) given `context` (the integers the
        decoder will have), summed over every grid."""
        q = self.quantized()
        total = coded[0].new_zeros(())
        for lv, (y, c) in enumerate(zip(coded, context, strict=True)):
            parent = _parent(context[lv + 1], c.shape) if lv + 1 < len(context) else torch.zeros_like(c)
            mask = torch.from_numpy(anchor_mask(*c.shape))
            nbrs = _neighbours(c)
            feats_a = parent.unsqueeze(0)
            feats_o = torch.cat((nbrs, parent.unsqueeze(0)), dim=0)
            for feats, mean_w, scale_w, offset, sel in (
                (feats_a, q["anchor_mean"], q["anchor_scale"], q["offsets"][0, lv], mask),
                (feats_o, q["other_mean"], q["other_scale"], q["offsets"][1, lv], ~mask),
            ):
                mu = torch.einsum("k,khw->hw", mean_w, feats)
                log_b = offset + torch.einsum("k,khw->hw", scale_w, feats.abs())
                log_b = _ste_round(log_b * SCALE_STEPS).clamp(*LOG_SCALE_RANGE) / SCALE_STEPS
                total = total + laplace_bits(y[sel], mu[sel], torch.exp(log_b[sel]))
        return total

    def state_integers(self) -> dict[str, np.ndarray]:
        return {n: torch.round(p.detach() * WEIGHT_SCALE).clamp(-MAX_WEIGHT, MAX_WEIGHT).to(torch.int64).numpy()
                for n, p in self.named_parameters()}


def laplace_bits(y: torch.Tensor, mu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    v = y - mu
    upper = _cdf(v + 0.5, b)
    lower = _cdf(v - 0.5, b)
    return -torch.log2((upper - lower).clamp_min(2.0**-16)).sum()


def _cdf(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sign(v) * (1.0 - torch.exp(-v.abs() / b))


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _parent(coarse: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    h, w = shape
    return coarse.repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w]


def _neighbours(c: torch.Tensor) -> torch.Tensor:
    p = torch.nn.functional.pad(c[None, None], (1, 1, 1, 1))[0, 0]
    return torch.stack((p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]))


# -- the integer model both ends compute (numpy, no torch) --------------------------------------------


def symbol_parameters(weights: dict[str, np.ndarray], level: int, grid: np.ndarray, parent: np.ndarray | None,
                      anchors: bool) -> tuple[np.ndarray, np.ndarray]:
    """(means, scales) for the anchors or the others of grid `level` (row-major order of that half),
    from integer weights and integer context. For the anchors, `grid` may hold anything at the
    non-anchor positions (they are not read)."""
    h, w = grid.shape
    mask = anchor_mask(h, w)
    par = (np.repeat(np.repeat(parent, 2, 0), 2, 1)[:h, :w] if parent is not None
           else np.zeros((h, w), np.int64))
    if anchors:
        feats = par[None]
        mean_w, scale_w, off = weights["anchor_mean"], weights["anchor_scale"], weights["offsets"][0, level]
        sel = mask
    else:
        p = np.pad(np.where(mask, grid, 0), 1)
        feats = np.stack((p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:], par))
        mean_w, scale_w, off = weights["other_mean"], weights["other_scale"], weights["offsets"][1, level]
        sel = ~mask
    feats = feats[:, sel].astype(np.int64)
    mean_num = np.einsum("k,kn->n", mean_w.astype(np.int64), feats)  # exact integers
    scale_num = off + np.einsum("k,kn->n", scale_w.astype(np.int64), np.abs(feats))
    # log b = scale_num / WEIGHT_SCALE, in units of 1/SCALE_STEPS, rounded half away from zero on integers.
    idx = _div_round(scale_num * SCALE_STEPS, WEIGHT_SCALE)
    lo, hi = LOG_SCALE_RANGE
    idx = np.clip(idx, lo, hi) - lo
    return mean_num.astype(np.float64) / WEIGHT_SCALE, scale_table()[idx]


def _div_round(num: np.ndarray, den: int) -> np.ndarray:
    return np.sign(num) * ((np.abs(num) + den // 2) // den)
