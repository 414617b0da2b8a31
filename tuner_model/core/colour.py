"""Colour transforms applied around the network: it may learn YCbCr (decorrelated channels whose
chroma the codec can quantise harder) while users always see RGB."""

from __future__ import annotations

import numpy as np
import torch

from tuner_model.core.errors import ConfigError

COLOURS = ("rgb", "ycbcr", "gray")

# ITU-R BT.601 full range, centred so that all three channels live around [0, 1].
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
_OFFSET = np.array([0.0, 0.5, 0.5])
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def check(colour: str, channels: int) -> None:
    if colour not in COLOURS:
        raise ConfigError(f"unknown colour transform {colour!r}")
    if (colour == "gray") != (channels == 1):
        raise ConfigError(f"colour {colour!r} does not fit {channels} channels")


def forward(image: np.ndarray, colour: str) -> np.ndarray:
    """RGB (or gray) pixels to what the network is fitted to."""
    if colour == "ycbcr":
        return (image.astype(np.float64) @ _RGB_TO_YCC.T + _OFFSET).astype(np.float32)
    return image


def inverse(values: torch.Tensor, colour: str) -> torch.Tensor:
    """Network outputs back to RGB (or gray), unclamped."""
    if colour == "ycbcr":
        m = torch.as_tensor(_YCC_TO_RGB.T, dtype=values.dtype, device=values.device)
        off = torch.as_tensor(_OFFSET, dtype=values.dtype, device=values.device)
        return (values - off) @ m
    return values
