"""K TUNER networks of one configuration held as batched weights (a leading K dimension, torch.bmm): what
train/batched.py fits several images with, in a few large kernels instead of many small ones."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tuner_model.models import build_model
from tuner_model.models.config import ModelConfig
from tuner_model.models.tuner import TunerNet


class BatchedTuner(torch.nn.Module):
    """K TUNER networks of one configuration: parameters stacked along a leading K dimension."""

    def __init__(self, nets: Sequence[TunerNet]) -> None:
        super().__init__()
        first = nets[0]
        self.config: ModelConfig = first.config
        self.register_buffer("k", first.k.clone(), persistent=False)
        self.register_buffer("omega", first.omega.clone(), persistent=False)
        self.phase = torch.nn.Parameter(torch.stack([n.phase.detach() for n in nets]))  # (K, m)
        self.hidden = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([n.hidden[i].detach() for n in nets])) for i in range(len(first.hidden))])
        self.hidden_bias = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([n.hidden_bias[i].detach() for n in nets]))
             for i in range(len(first.hidden))])
        self.out_weight = torch.nn.Parameter(torch.stack([n.out.weight.detach() for n in nets]))  # (K, C, n)
        self.out_bias = torch.nn.Parameter(torch.stack([n.out.bias.detach() for n in nets]))  # (K, C)
        # The clamp bound per entry of each hidden matrix; identical for every network of one config.
        for i in range(len(first.hidden)):
            bound = first.weight_bound(i).detach().clone() / self.config.hidden_omega
            self.register_buffer(f"bound{i}", bound, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) shared coordinates → (K, N, C)."""
        wh = self.config.hidden_omega
        y = torch.sin((x @ self.omega.T)[None] + self.phase[:, None, :])  # (K, N, m)
        for v, b in zip(self.hidden, self.hidden_bias, strict=True):
            y = torch.sin(torch.baddbmm((wh * b)[:, None, :], y, (wh * v).transpose(1, 2)))
        return torch.baddbmm(self.out_bias[:, None, :], y, self.out_weight.transpose(1, 2))

    def penalty(self) -> None:
        return None  # learned bounds have no batched form

    @torch.no_grad()
    def project(self) -> None:
        for i, v in enumerate(self.hidden):
            bound = getattr(self, f"bound{i}")
            torch.maximum(torch.minimum(v, bound), -bound, out=v)

    @staticmethod
    def net_name(name: str) -> str:
        """The TunerNet parameter that a stacked parameter holds (`out_weight` is `out.weight`)."""
        return {"out_weight": "out.weight", "out_bias": "out.bias"}.get(name, name)

    def unstack(self, k: int, seed: int) -> TunerNet:
        """Network k as a plain TunerNet on the CPU."""
        net = build_model(self.config, seed=seed)
        assert isinstance(net, TunerNet)
        with torch.no_grad():
            net.phase.copy_(self.phase[k])
            for i in range(len(net.hidden)):
                net.hidden[i].copy_(self.hidden[i][k])
                net.hidden_bias[i].copy_(self.hidden_bias[i][k])
            net.out.weight.copy_(self.out_weight[k])
            net.out.bias.copy_(self.out_bias[k])
        return net.eval()


def batchable(config: ModelConfig) -> bool:
    return config.arch == "tuner" and not config.learn_bounds
