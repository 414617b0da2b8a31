"""Fourier feature network (Tancik et al. 2020): γ(x) = [sin 2πBx, cos 2πBx] with B ~ N(0, σ²) frozen,
then ReLU hidden layers and a linear output. B is stored (it is not on a lattice we can regenerate)."""

from __future__ import annotations

import math

import torch
from torch import nn

from tuner_model.models.config import ModelConfig


class FourierFeatureNet(nn.Module):
    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        b = torch.randn((config.input_width // 2, 2), generator=generator) * config.ffm_sigma
        self.register_buffer("B", b)
        widths = (config.input_width, *config.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, c) for a, c in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], config.channels)
        if generator is not None:
            with torch.no_grad():
                for lin in (*self.layers, self.out):
                    bound = 1 / math.sqrt(lin.weight.shape[1])
                    lin.weight.copy_((torch.rand(lin.weight.shape, generator=generator) * 2 - 1) * bound)
                    lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * x @ self.B.T
        y = torch.cat((torch.sin(z), torch.cos(z)), dim=-1)
        for lin in self.layers:
            y = torch.relu(lin(y))
        return self.out(y)

    def project(self) -> None:
        pass

    def penalty(self) -> None:
        return None
