"""Choosing the compute device without touching CUDA before it is needed (fork safety, SERVICE_NOTES §2.1)."""

from __future__ import annotations

import os

import torch

from tuner_model.core.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but no CUDA device is available")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
