"""Per-tensor quantizers for the network's trainable tensors (docs/CODEC.md, docs/FORMAT.md).

TUNER's structure gives most quantization ranges for free:
- hidden weights are bounded per column, |W_ij| <= c_j, so a uniform quantizer with 2Q+1 levels over
  [-c_j, c_j] needs no stored range ("bounded");
- input phases and hidden-layer biases feed a sine, so only their value modulo 2π matters: they live on
  a circle divided into N equal steps, with no range and no wrap-around waste ("circular");
- the output layer is unbounded: a stored step and a symbol range R ("step");
- a few tiny tensors (the output bias) stay half floats; other architectures can fall back to fp32.

Every quantizer maps a float tensor to integer symbols and back with the same float32 arithmetic in the
encoder and the decoder, and `fake` is its straight-through version for quantization-aware training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner_model.core.errors import BlobError, ConfigError

KIND_F32, KIND_F16, KIND_BOUNDED, KIND_CIRCULAR, KIND_STEP = 0, 1, 2, 3, 4
KINDS = (KIND_F32, KIND_F16, KIND_BOUNDED, KIND_CIRCULAR, KIND_STEP)
MAX_LEVELS = 32767  # Q of a bounded quantizer
MAX_CIRCLE = 1 << 16  # N of a circular quantizer
MAX_RANGE = 1 << 20  # R of a step quantizer
TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class QuantSpec:
    """One knob, `levels` (Q), and fixed ratios for the other tensors, chosen by measurement (CODEC.md):
    hidden weights get 2Q+1 levels over their bound; phases and hidden biases get N = phase_ratio·Q
    steps around the circle (they are few, so generous steps cost little); output weights get a step of
    max|C| / (out_ratio·Q)."""

    levels: int = 16
    phase_ratio: float = 16.0
    out_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ConfigError(f"quantization levels must be in 1..{MAX_LEVELS}, got {self.levels}")
        if not 0.1 <= self.phase_ratio <= 1000 or not 0.01 <= self.out_ratio <= 1000:
            raise ConfigError("quantization ratios out of range")

    @property
    def circle(self) -> int:
        return int(min(MAX_CIRCLE, max(4, round(self.phase_ratio * self.levels))))

    def with_levels(self, levels: int) -> QuantSpec:
        return QuantSpec(levels, self.phase_ratio, self.out_ratio)


@dataclass(frozen=True)
class Quantizer:
    """How one tensor is coded. `param` is Q (bounded), N (circular) or the step (step kind)."""

    kind: int
    param: float = 0.0
    bound: torch.Tensor | None = None  # bounded: per-element bound of the stored tensor
    scale: float = 1.0  # circular: stored value × scale is the angle (ω_h for hidden biases)

    @property
    def entropy_coded(self) -> bool:
        return self.kind in (KIND_BOUNDED, KIND_CIRCULAR, KIND_STEP)

    def symbol_range(self, symbols: np.ndarray | None = None) -> tuple[int, int]:
        if self.kind == KIND_BOUNDED:
            q = int(self.param)
            return -q, q
        if self.kind == KIND_CIRCULAR:
            return 0, int(self.param) - 1
        if self.kind == KIND_STEP:
            r = 0 if symbols is None or symbols.size == 0 else int(np.abs(symbols).max())
            return -r, r
        raise ValueError("not an entropy-coded kind")

    def _round(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(torch.float32)
        if self.kind == KIND_BOUNDED:
            q = float(self.param)
            b = self.bound.to(t.device)
            return torch.clamp(torch.round(t / b * q), -q, q)
        if self.kind == KIND_CIRCULAR:
            n = float(self.param)
            return torch.round(t * (self.scale * n / TWO_PI))
        if self.kind == KIND_STEP:
            return torch.round(t / float(self.param))
        raise ValueError("not a quantized kind")

    def symbols(self, t: torch.Tensor) -> np.ndarray:
        s = self._round(t)
        if self.kind == KIND_CIRCULAR:
            s = torch.remainder(s, float(self.param))
        return s.cpu().numpy().astype(np.int64).reshape(-1)

    def values(self, symbols: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The float32 tensor a decoder rebuilds from symbols (the same arithmetic on every side)."""
        s = torch.as_tensor(np.asarray(symbols), dtype=torch.float32).reshape(shape)
        if self.kind == KIND_BOUNDED:
            return s / float(self.param) * self.bound.cpu()
        if self.kind == KIND_CIRCULAR:
            return s * float(TWO_PI / (self.param * self.scale))
        if self.kind == KIND_STEP:
            return s * float(self.param)
        raise ValueError("not a quantized kind")

    def fake(self, t: torch.Tensor) -> torch.Tensor:
        """Quantize in the forward pass, pass gradients straight through (QAT)."""
        if self.kind == KIND_F32:
            return t
        if self.kind == KIND_F16:
            return t + (t.detach().half().float() - t.detach())
        s = self._round(t)
        if self.kind == KIND_BOUNDED:
            v = s / float(self.param) * self.bound.to(t.device)
        elif self.kind == KIND_CIRCULAR:
            v = s * float(TWO_PI / (self.param * self.scale))
        else:
            v = s * float(self.param)
        return t + (v - t.detach())


def tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def plan(model: nn.Module, spec: QuantSpec | None) -> dict[str, Quantizer]:
    """A quantizer for each stored tensor of `model` (in state_dict order). None: lossless fp32."""
    state = model.state_dict()
    if spec is None:
        return {name: Quantizer(KIND_F32) for name in state}
    config = model.config
    out: dict[str, Quantizer] = {}
    compact_tuner = config.arch == "tuner" and not config.learn_bounds
    for name, t in state.items():
        if compact_tuner and name == "phase":
            out[name] = Quantizer(KIND_CIRCULAR, spec.circle)
        elif compact_tuner and name.startswith("hidden_bias."):
            out[name] = Quantizer(KIND_CIRCULAR, spec.circle, scale=config.hidden_omega)
        elif compact_tuner and name.startswith("hidden."):
            layer = int(name.split(".")[1])
            bound = (model.weight_bound(layer) / config.hidden_omega).detach().cpu().to(torch.float32)
            out[name] = Quantizer(KIND_BOUNDED, spec.levels, bound=bound)
        elif name.endswith("bias") and t.numel() <= 16 or name == "B":
            out[name] = Quantizer(KIND_F16 if name != "B" else KIND_F32)
        else:
            out[name] = step_quantizer(t, spec.out_ratio * spec.levels)
    return out


def step_quantizer(t: torch.Tensor, divisions: float) -> Quantizer:
    peak = float(t.detach().abs().max()) if t.numel() else 0.0
    step = float(np.float32(max(peak, 1e-8) / max(divisions, 1e-3)))
    if peak / step > MAX_RANGE:
        step = float(np.float32(peak / MAX_RANGE * 1.001))
    return Quantizer(KIND_STEP, step)


def quantizer_for(kind: int, param: float, model: nn.Module, name: str) -> Quantizer:
    """The decoder's quantizer for a stored tensor, checked against what the architecture allows."""
    config = model.config
    compact_tuner = config.arch == "tuner" and not config.learn_bounds
    if kind in (KIND_F32, KIND_F16, KIND_STEP):
        return Quantizer(kind, param)
    if kind == KIND_CIRCULAR and compact_tuner and name == "phase":
        return Quantizer(kind, param)
    if kind == KIND_CIRCULAR and compact_tuner and name.startswith("hidden_bias."):
        return Quantizer(kind, param, scale=config.hidden_omega)
    if kind == KIND_BOUNDED and compact_tuner and name.startswith("hidden."):
        layer = int(name.split(".")[1])
        bound = (model.weight_bound(layer) / config.hidden_omega).detach().cpu().to(torch.float32)
        return Quantizer(kind, param, bound=bound)
    raise BlobError(f"tensor {name} cannot be coded with kind {kind}")


@torch.no_grad()
def snap(model: nn.Module, quantizers: dict[str, Quantizer]) -> None:
    """Replace the model's tensors by exactly what a decoder will rebuild from the symbols."""
    state = model.state_dict()
    new = {}
    for name, q in quantizers.items():
        t = state[name]
        if q.kind == KIND_F32:
            new[name] = t.detach().cpu().to(torch.float32)
        elif q.kind == KIND_F16:
            new[name] = t.detach().cpu().to(torch.float16).to(torch.float32)
        else:
            new[name] = q.values(q.symbols(t), tuple(t.shape))
    model.load_state_dict(new, strict=False)
