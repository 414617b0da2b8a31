"""TUNER (Novello et al., CVPR 2025): f(x) = C · H(S(x)) + e.

S_j(x) = sin(<ω_j, x> + φ_j), with ω_j = (2π/p)·k_j frozen on the integer lattice and φ trainable;
H is one or more sine layers h = sin(W y + b) whose effective weights W = ω_h·V are bounded per input
column, |W_ij| <= c_j, so harmonics of column j decay like (c_j/2)^n / n! (Theorem 2); C is linear.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tuner_model.core.frequencies import FrequencySpec, is_low, sample_frequencies
from tuner_model.models.config import ModelConfig


class TunerNet(nn.Module):
    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        m = config.input_width
        spec = FrequencySpec(m, config.bandlimit, config.block_limit, config.low_fraction, config.freq_seed)
        k = torch.from_numpy(sample_frequencies(spec))
        low = torch.from_numpy(is_low(k.numpy(), config.block_limit))
        # Derived from the seed, never stored: non-persistent buffers.
        self.register_buffer("k", k, persistent=False)
        self.register_buffer("omega", (2 * math.pi / config.period) * k.to(torch.float32), persistent=False)
        c = torch.where(low, torch.tensor(config.bound_low), torch.tensor(config.bound_high))
        self.register_buffer("column_bound", c.to(torch.float32), persistent=False)

        g = generator
        self.phase = nn.Parameter(_uniform((m,), math.pi / 2, g))
        widths = (m, *config.hidden)
        wh = config.hidden_omega
        self.hidden = nn.ParameterList()
        self.hidden_bias = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            self.hidden.append(nn.Parameter(_uniform((fan_out, fan_in), math.sqrt(6 / fan_in) / wh, g)))
            self.hidden_bias.append(nn.Parameter(_uniform((fan_out,), 1 / math.sqrt(fan_in) / wh, g)))
        if config.learn_bounds:
            # c for the first layer, per column; a full matrix for deeper layers (TUNER.md §3.3).
            self.bounds = nn.ParameterList([nn.Parameter(c.clone())])
            for fan_in, fan_out in zip(widths[1:-1], widths[2:], strict=True):
                self.bounds.append(nn.Parameter(torch.full((fan_out, fan_in), config.bound_deep)))
        n = widths[-1]
        self.out = nn.Linear(n, config.channels)
        with torch.no_grad():
            self.out.weight.copy_(_uniform((config.channels, n), math.sqrt(6 / n) / wh, g))
            self.out.bias.zero_()
        # Start inside the bounds: with small c_j the uniform init would otherwise exceed them.
        self.project()

    def effective_weight(self, layer: int) -> torch.Tensor:
        """W of hidden layer `layer` as the sine sees it (ω_h·V, or c·tanh(s·V) with learned bounds)."""
        v = self.hidden[layer]
        if self.config.learn_bounds:
            c = self.bounds[layer].abs()
            return c * torch.tanh(self.config.hidden_omega / 5 * v)
        return self.config.hidden_omega * v

    def weight_bound(self, layer: int) -> torch.Tensor:
        """The bound on |W| of hidden layer `layer`, broadcastable to its shape."""
        if self.config.learn_bounds:
            return self.bounds[layer].detach().abs().expand_as(self.hidden[layer])
        if layer == 0:
            return self.column_bound.expand_as(self.hidden[0])
        return torch.full_like(self.hidden[layer], self.config.bound_deep)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x @ self.omega.T + self.phase)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        wh = self.config.hidden_omega
        for i in range(len(self.hidden)):
            y = torch.sin(nn.functional.linear(y, self.effective_weight(i), wh * self.hidden_bias[i]))
        return self.out(y)

    @torch.no_grad()
    def project(self) -> None:
        """Enforce the bounds after an optimizer step: clamp each column of V to ±c_j/ω_h (only the
        hidden matrices; never the output layer, TUNER.md §8.3)."""
        if self.config.learn_bounds:
            return  # tanh keeps |W| < |c| by construction
        wh = self.config.hidden_omega
        for i, v in enumerate(self.hidden):
            bound = self.weight_bound(i) / wh
            torch.maximum(torch.minimum(v, bound), -bound, out=v)

    def penalty(self) -> torch.Tensor | None:
        if not self.config.learn_bounds:
            return None
        lam = self.config.bound_penalty
        return lam * sum(b.abs().mean() for b in self.bounds)


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound
