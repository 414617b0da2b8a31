"""TUNER's first layer on a pixel grid, separated by axis: what rendering (render/separable.py) and training
(train/grid.py) share, so that both group the frequencies, build the per-axis sine factors and size their
row tiles by one rule, with the same operations in the same order (blobs stay byte-identical).

With integer frequencies k_j = (kx_j, ky_j),
    sin(ωx_j·x + ωy_j·y + φ_j) = sin(ωx_j·x)·cos(ωy_j·y + φ_j) + cos(ωx_j·x)·sin(ωy_j·y + φ_j),
and many columns share a kx (the low block has only L + 1 distinct values). Grouping the columns by kx, the
first hidden pre-activation on a grid xs × ys is
    z_i(x, y) = b_i + Σ_d [A_id(y)·sin(ω_d·x) + B_id(y)·cos(ω_d·x)],
with A and B computed once per row from the y factors sin/cos(ωy·y + φ) and the first hidden matrix: one
matrix product whose inner dimension is 2·#{kx} − 1 instead of m, and O((W + H)·m) sines instead of W·H·m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TILE_ELEMENTS = 1 << 21  # pre-activations per row tile: 8 MB of float32 stays in cache


def tile_rows(row_elements: int) -> int:
    """Grid rows per tile when one row holds `row_elements` pre-activations (at least one row)."""
    return max(1, TILE_ELEMENTS // max(1, row_elements))


@dataclass(frozen=True)
class KxGroups:
    """The columns of a frequency set grouped by their integer kx, on the CPU."""

    order: torch.Tensor  # (m,) int64: the columns sorted by group (stably), so each group is one slice
    bounds: tuple[int, ...]  # group g is columns order[bounds[g]:bounds[g+1]]
    omega_x: torch.Tensor  # (D,) float64: ωx of each group, ascending
    sin_groups: tuple[int, ...]  # groups with kx != 0 (sin(0·x) = 0 adds nothing)
    zero_group: int | None  # the group with kx = 0, whose cos(0·x) = 1 carries the first hidden bias, if any
    omega_y: torch.Tensor  # (m,) float64: ωy of each column, in `order`

    @property
    def count(self) -> int:
        return len(self.bounds) - 1


def kx_groups(k: torch.Tensor, period: float) -> KxGroups:
    """The grouping of integer frequencies `k` (m, 2) by kx, with ω = 2πk/period."""
    k = k.to(torch.int64).cpu()
    scale = 2 * math.pi / period
    kxs, group = torch.unique(k[:, 0], return_inverse=True)
    order = torch.argsort(group, stable=True)
    bounds = tuple(torch.searchsorted(group[order], torch.arange(kxs.numel() + 1)).tolist())
    sin_groups = tuple(g for g in range(kxs.numel()) if int(kxs[g]) != 0)
    zero = [g for g in range(kxs.numel()) if int(kxs[g]) == 0]
    return KxGroups(order=order, bounds=bounds, omega_x=scale * kxs.to(torch.float64), sin_groups=sin_groups,
                    zero_group=zero[0] if zero else None, omega_y=scale * k[order, 1].to(torch.float64))


def x_factors(groups: KxGroups, xs: torch.Tensor, bias_row: bool = False) -> torch.Tensor:
    """(R, len(xs)) float32 on the CPU: rows cos(ωx_d·x) for every group, then sin(ωx_d·x) for each of
    `sin_groups`, then (with `bias_row`) a row of ones to carry the first hidden bias where no group has kx = 0.
    The tables in float64 (the arguments reach hundreds of radians), stored in float32 for the products."""
    ax = groups.omega_x[:, None] * xs.to(torch.float64).cpu()[None, :]  # (D, W)
    rows = [torch.cos(ax), torch.sin(ax[list(groups.sin_groups)])]
    if bias_row:
        rows.append(torch.ones((1, ax.shape[1]), dtype=torch.float64))
    return torch.cat(rows).to(torch.float32)


def y_factors(ys: torch.Tensor, omega_y: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of ωy·y + φ, float32, for every row y and column: (H, m) for phases (m,), (K, H, m) for
    phases (K, m) (K stacked networks); phases and ωy in the groups' column order. The argument in float64, as
    the x tables; differentiable in the phases."""
    arg = ys[:, None] * omega_y + phase.to(torch.float64)[..., None, :]
    return torch.sin(arg).to(torch.float32), torch.cos(arg).to(torch.float32)


__all__ = ["TILE_ELEMENTS", "KxGroups", "kx_groups", "tile_rows", "x_factors", "y_factors"]
