"""SIREN (Sitzmann et al. 2020), sized like TUNER for side-by-side comparisons: a trainable first sine
layer sin(ω0·(Ax + a)) of m neurons, then the same hidden sine layers and linear output."""

from __future__ import annotations

import math

import torch
from torch import nn

from tuner_model.models.config import ModelConfig
from tuner_model.models.tuner import _uniform


class SirenNet(nn.Module):
    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        g = generator
        w0 = config.first_omega
        m = config.input_width
        self.first = nn.Linear(2, m)
        widths = (m, *config.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1], config.channels)
        with torch.no_grad():
            self.first.weight.copy_(_uniform((m, 2), 1 / 2, g))  # U(-1/d, 1/d), d = 2
            self.first.bias.copy_(_uniform((m,), 1 / 2, g))
            for lin in (*self.layers, self.out):
                fan_in = lin.weight.shape[1]
                lin.weight.copy_(_uniform(tuple(lin.weight.shape), math.sqrt(6 / fan_in) / w0, g))
                lin.bias.copy_(_uniform(tuple(lin.bias.shape), 1 / math.sqrt(fan_in) / w0, g))
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.config.first_omega
        y = torch.sin(w0 * self.first(x))
        for lin in self.layers:
            y = torch.sin(w0 * lin(y))
        return self.out(y)

    def project(self) -> None:
        pass

    def penalty(self) -> None:
        return None
