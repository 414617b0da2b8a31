"""The networks: TUNER and the baselines we compare it with, behind one interface.

Every model maps (N, 2) coordinates to (N, channels) values and has `project()` (called after each
optimizer step) and `penalty()` (an extra loss term or None).
"""

from __future__ import annotations

import torch
from torch import nn

from tuner_model.models.config import ARCHS, ModelConfig
from tuner_model.models.ffm import FourierFeatureNet
from tuner_model.models.siren import SirenNet
from tuner_model.models.tuner import TunerNet

__all__ = ["ARCHS", "ModelConfig", "TunerNet", "SirenNet", "FourierFeatureNet", "build_model"]


def build_model(config: ModelConfig, seed: int = 0) -> nn.Module:
    """A freshly initialised network; the same config and seed give the same weights."""
    g = torch.Generator().manual_seed(seed)
    cls = {"tuner": TunerNet, "siren": SirenNet, "ffm": FourierFeatureNet}[config.arch]
    return cls(config, generator=g)
