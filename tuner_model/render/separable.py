"""Exact values of a TUNER network on a pixel grid, its input layer summed separably.

The separation itself (columns grouped by integer kx, the per-axis sine factors, the row-tile size) is
models/separable.py, shared with training's grid path; here the first layer's coefficients per row and the
tiles of the deeper layers, without autograd. The inner dimension of the big product is 2·#{kx} − 1 (31 for
the default 192-wide network) instead of m = 192. The same function, summed in another order: exact up to
float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from tuner_model.core.stop import checkpoint
from tuner_model.models.separable import kx_groups, tile_rows, x_factors, y_factors
from tuner_model.models.tuner import TunerNet
from tuner_model.render.sines import fold_impl, sin_impl


def supports(model: nn.Module) -> bool:
    """Whether `model` can take the fast path."""
    return isinstance(model, TunerNet)


def grid_values(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Raw network outputs (len(ys), len(xs), C), float32, at every (x, y) of a separable grid."""
    coef, e, bias, n_cos = first_layer_factors(model, xs, ys)
    n = coef.shape[2]
    deeper = [(model.effective_weight(i).detach().float(),
               (model.config.hidden_omega * model.hidden_bias[i].detach().float())[:, None])
              for i in range(1, len(model.hidden))]
    cw = model.out.weight.detach().float()  # (C, n_last)
    cb = model.out.bias.detach().float()[:, None]
    nx, ny = xs.numel(), ys.numel()
    out = torch.empty((ny, cw.shape[0], nx), dtype=torch.float32)
    rows = tile_rows(n * nx)
    t_max = min(rows, ny)
    sin_ = sin_impl()

    def first(lo: int, hi: int, e_part: torch.Tensor, r: slice, dest: torch.Tensor, with_bias: bool) -> None:
        # (t·n, K) @ (K, W) with the left factor read transposed in place (no copy).
        k = e_part.shape[0]
        torch.mm(coef[r, lo:hi].reshape(k, -1).T, e_part, out=dest.view(-1, e_part.shape[1]))
        if with_bias and bias is not None:
            dest += bias

    def finish(y: torch.Tensor, dest: torch.Tensor) -> None:
        for wl, bl in deeper:
            y = sin_(torch.matmul(wl, y).add_(bl))
        # (C, n) @ (t, n, W): a wide product; (t, W, n) @ (n, C) has a 3-column output that BLAS runs slowly.
        torch.matmul(cw, y, out=dest)

    if is_symmetric(xs) and n_cos < e.shape[0]:
        # cos(ω x) is even and sin(ω x) odd: with C = the cosine rows' sum and S = the sine rows', the
        # pre-activation is C + S at x and C − S at −x. Half the columns, the rows split in two products:
        # half the multiply-adds of the whole product, the same sums.
        mid = nx // 2
        right = e[:, mid:]  # x >= 0 (the middle column x = 0 belongs to the right half when nx is odd)
        hr = right.shape[1]
        e_cos, e_sin = right[:n_cos].contiguous(), right[n_cos:].contiguous()
        pbuf, qbuf = torch.empty((t_max, n, hr)), torch.empty((t_max, n, hr))
        left = torch.empty((t_max, cw.shape[0], hr))
        fold = fold_impl()
        for lo in range(0, ny, rows):
            checkpoint()
            hi = min(ny, lo + rows)
            p, q = pbuf[: hi - lo], qbuf[: hi - lo]
            first(lo, hi, e_cos, slice(0, n_cos), p, with_bias=True)  # a constant is even
            first(lo, hi, e_sin, slice(n_cos, None), q, with_bias=False)
            fold(p, q)  # p <- sin(C + S), q <- sin(C − S)
            finish(p, out[lo:hi, :, mid:])
            lv = left[: hi - lo]
            finish(q, lv)
            out[lo:hi, :, :mid] = lv[:, :, nx % 2:].flip(-1)
    else:
        # One buffer for every tile: a fresh multi-megabyte tensor per tile costs page faults on every use.
        zbuf = torch.empty((t_max, n, nx), dtype=torch.float32)
        for lo in range(0, ny, rows):
            checkpoint()
            hi = min(ny, lo + rows)
            z = zbuf[: hi - lo]  # (t, n, W)
            first(lo, hi, e, slice(None), z, with_bias=True)
            finish(sin_(z), out[lo:hi])
    out += cb
    return out.permute(0, 2, 1).contiguous()


def is_symmetric(xs: torch.Tensor) -> bool:
    """Whether the grid is its own mirror image about x = 0 (any full-width render, not most crops)."""
    if xs.numel() < 8:
        return False
    scale = float(xs.abs().max())
    return bool(torch.allclose(xs, -xs.flip(0), rtol=0.0, atol=1e-12 * max(scale, 1.0)))


def first_layer_factors(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """The separable factors of the first hidden pre-activation: z[y, i, x] = Σ_r coef[r, y, i]·e[r, x]
    (+ bias[i] when no column has kx = 0). coef is (K, H, n) so each factor is written contiguously.
    The first `n_cos` rows of e are cosines of x (even), the rest sines (odd)."""
    cfg = model.config
    groups = kx_groups(model.k, cfg.period)
    w0 = model.effective_weight(0).detach().to(torch.float32)[:, groups.order]  # (n, m), columns by group
    b0 = cfg.hidden_omega * model.hidden_bias[0].detach().to(torch.float32)
    n, bounds = w0.shape[0], groups.bounds
    sb, cb = y_factors(ys, groups.omega_y, model.phase.detach()[groups.order])  # (H, m) each
    e = x_factors(groups, xs)  # the bias rides in coef (below), not on a row of ones
    coef = torch.empty((e.shape[0], ys.numel(), n), dtype=torch.float32)
    for g in range(groups.count):
        a, b = bounds[g], bounds[g + 1]
        torch.matmul(sb[:, a:b], w0[:, a:b].T, out=coef[g])  # sin(B) multiplies cos(ω_d x)
    for r, g in enumerate(groups.sin_groups, start=groups.count):
        a, b = bounds[g], bounds[g + 1]
        torch.matmul(cb[:, a:b], w0[:, a:b].T, out=coef[r])  # cos(B) multiplies sin(ω_d x)
    if groups.zero_group is not None:
        coef[groups.zero_group] += b0  # the bias rides on cos(0·x) = 1
        return coef, e, None, groups.count
    return coef, e, b0[:, None], groups.count
