"""TUNER image codec: fit a bounded sinusoidal network to an image and store its quantized, entropy-coded
weights as a blob that renders at any resolution.

    from tuner_model import EncodeRequest, EncodeSettings, encode, encode_batch, decode_blob, resolve
    fitted, blob = encode(pixels, EncodeSettings(bpp=1.0))   # pixels: (H, W, C) float in [0, 1]
    plan = resolve(EncodeRequest(bpp=1.0), w, h, 3)          # what an encode will do, before any pixel
    outcomes = encode_batch([pixels, more_pixels], plan)     # K images of the plan's shape, one path
    render_image(decode_blob(blob), width=2048)              # from tuner_model.render.fitted

The package by role: core/ (coordinates, colour, frequencies, metrics, errors, image files), models/,
train/, render/, codec/ (the bitstream), rate/ (the request, effort presets, the plan, level search, the
encode pipeline, the rate-control table), bench/. The names below load lazily, so that `import tuner_model.codec`
and decoding a blob load no training code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tuner_model.core import mkl_dispatch

mkl_dispatch.install()  # before any module here imports torch: MKL's fast path on AMD CPUs

_EXPORTS = {
    "encode": "tuner_model.rate.encode",
    "encode_batch": "tuner_model.rate.encode",
    "iter_encode": "tuner_model.rate.encode",
    "resolve": "tuner_model.rate.plan",
    "EncodeSettings": "tuner_model.rate.request",
    "EncodeRequest": "tuner_model.rate.request",
    "decode_blob": "tuner_model.codec",  # any version written: a FittedImage, or a TiledImage (issue 28)
    "read_info": "tuner_model.codec",
    "FittedImage": "tuner_model.models.fitted",
}

if TYPE_CHECKING:
    from tuner_model.codec import decode_blob, read_info
    from tuner_model.models.fitted import FittedImage
    from tuner_model.rate.encode import encode, encode_batch, iter_encode
    from tuner_model.rate.plan import resolve
    from tuner_model.rate.request import EncodeRequest, EncodeSettings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tuner_model' has no attribute {name!r}")


__all__ = ["EncodeRequest", "EncodeSettings", "FittedImage", "decode_blob", "encode", "encode_batch", "iter_encode",
           "read_info", "resolve"]
