"""Training TUNER networks on a pixel grid: the input layer summed separably, the rest in fused tiles.

On a grid of pixel centres (xs × ys) TUNER's first hidden pre-activation separates (models/separable.py
derives it, and builds the grouping and the x and y factors for rendering and training alike): with the
columns grouped by their integer kx,
    z_i(x, y) = Σ_r coef[r, y, i] · e[r, x],
where the rows r of e are cos(ω_d x) for every distinct kx_d and sin(ω_d x) for kx_d ≠ 0, and
coef[r, y] = sin(ωy·y + φ)[:, cols_d] @ W[:, cols_d]ᵀ (or cos) holds all that depends on y, the phases
and the first hidden matrix. The inner dimension of the big product is 2·#{kx} − 1 (33 for the 264-wide
network) instead of m, and coef costs O(H·m·n) instead of O(H·W·m·n).

`GridMSE` then runs, tile of rows by tile, the forward pass (product, sine, deeper layers, output
layer), the mean squared error and the backward pass by hand, keeping only one tile's activations: the
sine's cosine is computed next to it and used at once, nothing image-sized is stored for autograd. It
returns the loss and hands autograd the gradient with respect to coef (and the deeper layers and output
layer), from which autograd gets the phases', first matrix's and biases' gradients through the small
coef computation. The same function, summed in another order: gradients equal to the dense path's up
to float32 rounding (tests/test_train_grid.py).

Every network here is stacked (a leading K dimension, K >= 1): one TunerNet is K = 1.

Over 300 lines: one autograd Function's hand-written forward and backward and the tile products they
share; apart, neither half reads without the other.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tuner_model.core.stop import checkpoint
from tuner_model.models.separable import kx_groups, tile_rows, x_factors, y_factors
from tuner_model.train import fused as fused_mod
from tuner_model.train import native

CANCEL_EVERY_TILES = 16  # poll the cancel callback this often inside a step
# On the CPU: the top hidden layer's sine, the output layer and their backward as one compiled pass per tile
# (native.py, top_layer.c) where it builds; False forces the eager form (tests compare the two).
NATIVE_TOP = True


@dataclass(frozen=True)
class Separable:
    """The x-side of the separable first layer for one set of frequencies on one grid: the columns'
    order (grouped by kx), the group boundaries, the x table e and the y frequencies."""

    order: torch.Tensor  # (m,) column permutation
    bounds: tuple[int, ...]  # group g is columns order[bounds[g]:bounds[g+1]]
    cos_groups: tuple[int, ...]  # groups whose cosine row exists (all)
    sin_groups: tuple[int, ...]  # groups with kx != 0 (sin 0 = 0 adds nothing)
    zero_row: int | None  # the row of e that is cos(0·x) = 1 (carries the first hidden bias), if any
    e: torch.Tensor  # (R, W) float32: rows cos(ω_d x) for every group, then sin(ω_d x) for kx_d != 0
    omega_y: torch.Tensor  # (m,) float64, ωy of each column in `order`
    ys: torch.Tensor  # (H,) float64 row coordinates

    @property
    def rows(self) -> int:
        return self.e.shape[0] + (1 if self.zero_row is None else 0)


def separable(k: torch.Tensor, period: float, xs: torch.Tensor, ys: torch.Tensor) -> Separable:
    """The separable factors' fixed part for integer frequencies `k` (m, 2) on the grid xs × ys."""
    g = kx_groups(k, period)
    e = x_factors(g, xs, bias_row=g.zero_group is None).to(xs.device)  # no kx = 0: a row of ones for the bias
    return Separable(order=g.order.to(xs.device), bounds=g.bounds, cos_groups=tuple(range(g.count)),
                     sin_groups=g.sin_groups, zero_row=g.zero_group, e=e, omega_y=g.omega_y.to(xs.device),
                     ys=ys.to(torch.float64))


@dataclass
class TunerTensors:
    """K stacked TUNER networks as the tensors the grid path needs, built from parameters (or their
    quantized stand-ins) with autograd: phases (K, m), effective hidden weights W_l (K, n_l, n_{l-1}) and
    biases ω_h·b_l (K, n_l), output layer (K, C, n) and (K, C)."""

    phase: torch.Tensor
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    out_weight: torch.Tensor
    out_bias: torch.Tensor


def coefficients(sep: Separable, t: TunerTensors, rows: torch.Tensor | None = None) -> torch.Tensor:
    """coef (K, R, len(rows), n1) of the first hidden layer for the grid rows `rows` (all when None),
    differentiable in the phases, the first matrix and its bias."""
    ys = sep.ys if rows is None else sep.ys[rows]
    phase = t.phase[:, sep.order]  # (K, m)
    w0 = t.weights[0][:, :, sep.order]  # (K, n, m)
    sb, cb = y_factors(ys, sep.omega_y, phase)  # (K, H, m) each
    bias = t.biases[0][:, None, :].expand(-1, ys.numel(), -1)  # (K, H, n)
    index = _padded_groups(sep)
    if index is not None:  # every group's product in one batched call, groups padded with a zero column
        k_count, h, _ = sb.shape
        x = torch.cat([sb, cb, sb.new_zeros((k_count, h, 1))], dim=2)[:, :, index]  # (K, H, R', G)
        wg = torch.cat([w0, w0, w0.new_zeros((k_count, w0.shape[1], 1))], dim=2)[:, :, index]  # (K, n, R', G)
        coef = torch.matmul(x.permute(0, 2, 1, 3), wg.permute(0, 2, 3, 1))  # (K, R', H, n)
        if sep.zero_row is None:
            return torch.cat([coef, bias[:, None]], dim=1)
        coef[:, sep.zero_row] += bias
        return coef
    parts = []
    for g in sep.cos_groups:  # sin(ωy y + φ) multiplies cos(ωx x)
        a, b = sep.bounds[g], sep.bounds[g + 1]
        parts.append(torch.matmul(sb[:, :, a:b], w0[:, :, a:b].transpose(1, 2)))
    for g in sep.sin_groups:  # cos(ωy y + φ) multiplies sin(ωx x)
        a, b = sep.bounds[g], sep.bounds[g + 1]
        parts.append(torch.matmul(cb[:, :, a:b], w0[:, :, a:b].transpose(1, 2)))
    if sep.zero_row is None:
        parts.append(bias)
    else:
        parts[sep.zero_row] = parts[sep.zero_row] + bias
    return torch.stack(parts, dim=1)


PAD_LIMIT = 4.0  # pad the groups to one size when that costs at most this many times the columns


def _padded_groups(sep: Separable) -> torch.Tensor | None:
    """(R', G) indices into [sin columns | cos columns | a zero column] that lay every group's columns out
    in a row of one size (cos rows of e first, then sin rows, as `e`), or None when padding would cost
    more than PAD_LIMIT times the columns themselves (one large group among small ones)."""
    index = _group_index(sep.bounds, sep.cos_groups, sep.sin_groups)
    return None if index is None else index.to(sep.order.device)


@functools.lru_cache(maxsize=64)
def _group_index(bounds: tuple[int, ...], cos_groups: tuple[int, ...], sin_groups: tuple[int, ...]
                 ) -> torch.Tensor | None:
    m = bounds[-1]
    groups = [(g, 0) for g in cos_groups] + [(g, m) for g in sin_groups]
    size = max(bounds[g + 1] - bounds[g] for g, _ in groups)
    if len(groups) * size > PAD_LIMIT * 2 * m:
        return None
    index = torch.full((len(groups), size), 2 * m, dtype=torch.int64)
    for r, (g, offset) in enumerate(groups):
        a, b = bounds[g], bounds[g + 1]
        index[r, : b - a] = torch.arange(a, b) + offset
    return index


class GridMSE(torch.autograd.Function):
    """Per-network weighted MSE of K stacked TUNER networks on a grid, forward and backward in tiles.

    Inputs: coef (K, R, H, n1); the fixed inputs (_GridInputs: e, target, weight, where 1 marks a training
    pixel, and the denominator: the loss is Σ weight·err² / denominator); the output layer (K, C, n) and
    (K, C); then per deeper layer its W (K, n, n'), then per deeper layer its bias (K, n). Returns the K
    losses."""

    @staticmethod
    def forward(ctx, coef, fixed, out_w, out_b, *deep):  # type: ignore[override]
        e, target, weight, denominator = fixed.e, fixed.target, fixed.weight, fixed.denominator
        n_deep = len(deep) // 2
        deep_w, deep_b = deep[:n_deep], deep[n_deep:]
        k_count, r_count, h, n1 = coef.shape
        w = e.shape[1]
        widths = [n1] + [dw.shape[1] for dw in deep_w]
        rows = tile_rows(max(widths) * w)
        t_max = min(rows, h)
        c = out_w.shape[1]
        native_top = (NATIVE_TOP and not e.is_cuda and c <= 3 and e.is_contiguous() and target.is_contiguous()
                      and (weight is None or weight.is_contiguous()) and native.load() is not None)
        one_pass = native_top and n_deep == 0  # the whole tile after the first product in the kernel
        deep_top = native_top and n_deep > 0  # the kernel takes the top layer, torch the layers below
        # Per layer: its sine and its cosine (the backward of the sine), one tile deep; where the kernel takes
        # the top layer, that layer needs only its pre-activation's buffer. Flat buffers: one pass lays a tile
        # out (t, n, w) as the kernel's first product gives it; every other path neuron-major, (n, t, w), where
        # a tile of layer l is one (n_l, t·w) matrix and each deeper layer's product one matrix product.
        cosines = [torch.empty(nl * t_max * w, dtype=torch.float32, device=e.device) for nl in widths]
        sines = [torch.empty_like(x) for x in cosines[:-1 if native_top else None]]
        out = torch.empty(c * t_max * w, dtype=torch.float32, device=e.device)
        scale = 2.0 / denominator
        losses = torch.zeros(k_count, dtype=torch.float64, device=e.device)
        d_out_w, d_out_b = torch.zeros_like(out_w), torch.zeros_like(out_b)
        d_deep_w = [torch.zeros_like(x) for x in deep_w]
        d_deep_b = [torch.zeros_like(x) for x in deep_b]
        fused = fused_mod.top_backward is not None and not e.is_cuda and c <= 3
        if one_pass:  # coef's gradient as g @ eᵀ, into (H, n, R) order (faster than e @ gᵀ into coef's own)
            e_t = e.T.contiguous()
            d_coef = torch.empty((k_count, h, n1, r_count), dtype=coef.dtype, device=coef.device)
        else:
            d_coef = torch.empty_like(coef)
            d_tile = torch.empty(r_count * n1 * t_max, dtype=coef.dtype, device=coef.device)
        deep = _Deep(deep_w, d_deep_w, d_deep_b)
        tile = 0
        for k in range(k_count):
            cw, cb = out_w[k], out_b[k][:, None]
            if native_top:
                cw_c, cb_c = cw.contiguous(), out_b[k].contiguous()
                sums = native.Sums.zeros(c, widths[-1])
            for lo in range(0, h, rows):
                tile += 1
                if tile % CANCEL_EVERY_TILES == 0:
                    checkpoint()
                hi = min(h, lo + rows)
                t = hi - lo
                p = t * w
                mask = None if weight is None else weight[lo:hi]
                if one_pass:
                    z = cosines[0][: n1 * p].view(t, n1, w)
                    torch.mm(coef[k, :, lo:hi].reshape(r_count, t * n1).T, e, out=z.view(t * n1, w))
                    _native_top(z, cw_c, cb_c, target[k, lo:hi], mask, scale, sums)
                    torch.mm(z.view(t * n1, w), e_t, out=d_coef[k, lo:hi].view(t * n1, r_count))
                    continue
                s = [x[: nl * p].view(nl, p) for x, nl in zip(sines, widths, strict=False)]
                co = [x[: nl * p].view(nl, p) for x, nl in zip(cosines, widths, strict=True)]
                # coef's rows taken neuron by neuron (a small copy) give the first product in (n1, t, w) order.
                # Each layer's pre-activation goes to its cosine buffer; the fused backward (when compiled)
                # takes the top layer's cosine from it there, the others are turned into cosines at once.
                a = coef[k, :, lo:hi].transpose(1, 2).reshape(r_count, n1 * t)
                torch.mm(a.T, e, out=co[0].view(n1 * t, w))
                _activate(s[0], co[0], fused and n_deep == 0)
                for li, (dw, db) in enumerate(zip(deep_w, deep_b, strict=True)):
                    zl = co[li + 1]
                    torch.mm(dw[k], s[li], out=zl)
                    zl += db[k][:, None]
                    if not deep_top or li + 1 < n_deep:
                        _activate(s[li + 1], zl, fused and li + 1 == n_deep)
                if deep_top:
                    _native_top(co[-1].view(-1, t, w), cw_c, cb_c, target[k, lo:hi], mask, scale, sums,
                                neuron_major=True)
                    g = _backward_deep(k, co[-1], s, co, deep)
                else:
                    last = s[-1]
                    o = out[: c * p].view(c, p)
                    torch.mm(cw, last, out=o)
                    o += cb
                    o.view(c, t, w).sub_(target[k, lo:hi].transpose(0, 1))
                    if mask is not None:  # a 0/1 mask: Σ (m·r)² = Σ m·r² and its gradient 2·m·r
                        o.view(c, t, w).mul_(mask[None])
                    losses[k] += (o * o).sum(dtype=torch.float64)
                    o *= scale  # d loss / d out
                    d_out_b[k] += o.sum(dim=1)
                    d_out_w[k].addmm_(o, last.T)
                    g = co[-1]  # becomes dz_top = cos ⊙ (Cᵀ d_out)
                    if fused:  # g holds the top pre-activation z: one pass computes cos(z) ⊙ (Cᵀ d_out) over it
                        fused_mod.top_backward(g, o, cw)
                    else:  # the top sine is spent (the output layer's gradient has it): Cᵀ d_out goes there
                        torch.mm(cw.T, o, out=last)
                        g.mul_(last)
                    g = _backward_deep(k, g, s, co, deep)
                dt = d_tile[: r_count * n1 * t].view(r_count, n1 * t)
                torch.mm(e, g.view(n1 * t, w).T, out=dt)
                d_coef[k, :, lo:hi] = dt.view(r_count, n1, t).transpose(1, 2)
            if native_top:
                losses[k] += sums.loss[0]
                d_out_b[k] += sums.d_b.to(torch.float32)
                d_out_w[k] += sums.d_c.to(torch.float32)
        if one_pass:
            d_coef = d_coef.permute(0, 3, 1, 2)  # back to coef's (K, R, H, n), as a view
        ctx.save_for_backward(d_coef, d_out_w, d_out_b, *d_deep_w, *d_deep_b)
        ctx.n_deep = n_deep
        return (losses / denominator).to(torch.float32)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        saved = ctx.saved_tensors
        d_coef, d_out_w, d_out_b = saved[:3]
        rest = saved[3:]
        k_shape = (-1,) + (1,) * 3
        out = [d_coef * grad.view(k_shape), None, d_out_w * grad.view(-1, 1, 1), d_out_b * grad.view(-1, 1)]
        n_deep = ctx.n_deep
        out += [d * grad.view(-1, 1, 1) for d in rest[:n_deep]]
        out += [d * grad.view(-1, 1) for d in rest[n_deep:]]
        return tuple(out)


def _native_top(z: torch.Tensor, cw: torch.Tensor, cb: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor | None, scale: float, sums: native.Sums, neuron_major: bool = False) -> None:
    """native.top_layer on one tile (z becomes dz); GridMSE only takes this path once the kernel is loaded
    and its inputs are as it needs them, so a refusal here is the kernel failing to allocate."""
    if not native.top_layer(z, cw, cb, target, mask, scale, sums, neuron_major):
        raise MemoryError("the native top layer could not allocate its buffers")


def _activate(sine: torch.Tensor, pre: torch.Tensor, keep_pre: bool) -> None:
    """sine <- sin(pre); pre <- cos(pre), unless `keep_pre` (the fused backward takes its cosine itself)."""
    torch.sin(pre, out=sine)
    if not keep_pre:
        pre.cos_()


@dataclass(frozen=True)
class _GridInputs:
    """GridMSE's inputs that take no gradient: the first layer's x factors e (R, W), the target
    (K, H, C, W), the 0/1 weight (H, W) or None, and the loss's denominator."""

    e: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor | None
    denominator: float


@dataclass(frozen=True)
class _Deep:
    """The deeper hidden layers' weights (K, n, n') and the gradients accumulated into: weights and biases."""

    weights: tuple[torch.Tensor, ...] | list[torch.Tensor]
    d_weights: list[torch.Tensor]
    d_biases: list[torch.Tensor]


def _backward_deep(k: int, g: torch.Tensor, s: list[torch.Tensor], co: list[torch.Tensor], deep: _Deep) -> torch.Tensor:
    """From dz of the top hidden layer (g, in its cosine buffer) down to dz of the first, accumulating the
    deeper layers' weight and bias gradients; tiles neuron-major ((n_l, t·w) matrices), each layer's dz
    written over its cosine buffer."""
    for li in range(len(co) - 1, 0, -1):  # layer li takes s[li - 1] through W = deep_w[li - 1]
        wl = deep.weights[li - 1][k]
        below = co[li - 1]
        deep.d_biases[li - 1][k] += g.sum(dim=1)
        deep.d_weights[li - 1][k].addmm_(g, s[li - 1].T)
        torch.mm(wl.T, g, out=s[li - 1])  # the sine below is spent once its layer's weight gradient is taken
        below.mul_(s[li - 1])
        g = below
    return g


def tuner_tensors(params: Mapping[str, torch.Tensor], hidden_omega: float, depth: int, stacked: bool,
                  learn_bounds: bool = False) -> TunerTensors:
    """The grid path's view of a TunerNet's (stacked=False) or a BatchedTuner's (stacked=True) parameters,
    given by name (the parameters themselves or quantized stand-ins)."""
    lift = (lambda x: x) if stacked else (lambda x: x[None])
    weights, biases = [], []
    for i in range(depth):
        v = lift(params[f"hidden.{i}"])
        if learn_bounds:
            weights.append(lift(params[f"bounds.{i}"]).abs() * torch.tanh(hidden_omega / 5 * v))
        else:
            weights.append(hidden_omega * v)
        biases.append(hidden_omega * lift(params[f"hidden_bias.{i}"]))
    if stacked:
        out_w, out_b = params["out_weight"], params["out_bias"]
    else:
        out_w, out_b = params["out.weight"][None], params["out.bias"][None]
    return TunerTensors(lift(params["phase"]), weights, biases, out_w, out_b)


def grid_losses(sep: Separable, t: TunerTensors, target: torch.Tensor, weight: torch.Tensor | None,
                denominator: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The K networks' losses on the grid rows `rows` (target and weight already restricted to them),
    differentiable in every tensor of `t`."""
    coef = coefficients(sep, t, rows)
    fixed = _GridInputs(sep.e, target, weight, float(denominator))
    return GridMSE.apply(coef, fixed, t.out_weight, t.out_bias, *t.weights[1:], *t.biases[1:])


