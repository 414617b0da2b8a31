"""Blob <-> FittedImage. The header rebuilds the network (frozen frequencies are regenerated from
their seed and parameters, never stored); the payload holds the trainable tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import colour as colour_mod
from ..errors import BlobError, TunerError
from ..image_model import FittedImage
from ..models import ModelConfig, build_model
from .container import pack, unpack

CODEC_RAW_F32 = 0
MAX_PARAMETERS = 4_000_000  # far above any image codec setting; bounds what a header may ask for
MAX_SIDE = 1 << 16


@dataclass(frozen=True)
class BlobInfo:
    width: int
    height: int
    channels: int
    colour: str
    config: ModelConfig
    meta: dict
    bytes: int
    parameters: int

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / (self.width * self.height)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shapes of the tensors a blob stores, computed without allocating a network."""
    m, hidden, c = config.input_width, config.hidden, config.channels
    shapes: dict[str, tuple[int, ...]] = {}
    widths = (m, *hidden)
    if config.arch == "tuner":
        shapes["phase"] = (m,)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            shapes[f"hidden.{i}"] = (b, a)
            shapes[f"hidden_bias.{i}"] = (b,)
        if config.learn_bounds:
            shapes["bounds.0"] = (m,)
            for i, (a, b) in enumerate(zip(widths[1:-1], widths[2:], strict=True), start=1):
                shapes[f"bounds.{i}"] = (b, a)
    elif config.arch == "siren":
        shapes["first.weight"], shapes["first.bias"] = (m, 2), (m,)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            shapes[f"layers.{i}.weight"], shapes[f"layers.{i}.bias"] = (b, a), (b,)
    else:
        shapes["B"] = (m // 2, 2)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            shapes[f"layers.{i}.weight"], shapes[f"layers.{i}.bias"] = (b, a), (b,)
    shapes["out.weight"], shapes["out.bias"] = (c, widths[-1]), (c,)
    return shapes


def _parse_header(header: dict, size: int) -> BlobInfo:
    try:
        width, height = header["width"], header["height"]
        colour = header.get("colour", "rgb")
        meta = header.get("meta", {})
        config = ModelConfig.from_dict(header["model"])
    except KeyError as e:
        raise BlobError(f"blob header lacks {e.args[0]!r}") from None
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in (width, height)):
        raise BlobError("blob header: width and height must be integers in 1..65536")
    if not isinstance(colour, str) or not isinstance(meta, dict):
        raise BlobError("blob header: bad colour or meta")
    try:
        colour_mod.check(colour, config.channels)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    n = sum(math.prod(s) for s in expected_shapes(config).values())
    if n > MAX_PARAMETERS:
        raise BlobError(f"blob asks for {n} parameters (limit {MAX_PARAMETERS})")
    return BlobInfo(width, height, config.channels, colour, config, meta, size, n)


def read_info(data: bytes) -> BlobInfo:
    env = unpack(data)
    return _parse_header(env.header, len(data))


def encode_blob(fitted: FittedImage) -> bytes:
    shapes = expected_shapes(fitted.config)
    state = fitted.model.state_dict()
    parts = []
    for name, shape in shapes.items():
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        if tuple(t.shape) != shape:
            raise BlobError(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        parts.append(t.numpy().astype("<f4").tobytes())
    header = {
        "width": fitted.width,
        "height": fitted.height,
        "colour": fitted.colour,
        "model": fitted.config.to_dict(),
        "meta": fitted.meta,
    }
    return pack(header, b"".join(parts), CODEC_RAW_F32)


def decode_blob(data: bytes) -> FittedImage:
    env = unpack(data)
    info = _parse_header(env.header, len(data))
    if env.codec != CODEC_RAW_F32:
        raise BlobError(f"unsupported payload codec {env.codec}")
    shapes = expected_shapes(info.config)
    if len(env.payload) != 4 * info.parameters:
        raise BlobError("blob payload size does not match its header")
    try:
        model = build_model(info.config)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    flat = np.frombuffer(env.payload, dtype="<f4")
    if not np.isfinite(flat).all():
        raise BlobError("blob holds non-finite weights")
    state = {}
    offset = 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        state[name] = torch.from_numpy(flat[offset : offset + n].astype(np.float32).reshape(shape))
        offset += n
    model.load_state_dict(state, strict=True)
    return FittedImage(info.config, info.width, info.height, model.eval(), info.colour, dict(info.meta))
