"""Blob <-> FittedImage (format version 2, docs/FORMAT.md).

The header (header.py) rebuilds the network: image size, colour transform, architecture and the model configuration
(only the fields that differ from ModelConfig's defaults), and the frequency-sampling seed and parameters
(the frozen frequencies are regenerated, never stored). The payload gives, per stored tensor, its
quantizer (docs/CODEC.md) and entropy model, then one ANS stream of all the integer symbols.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tuner_model.codec import entropy
from tuner_model.codec.bitio import Reader, Writer
from tuner_model.codec.container import pack, unpack
from tuner_model.codec.header import MAX_PARAMETERS, BlobInfo, expected_shapes, read_header, write_header
from tuner_model.codec.quant import (
    KIND_BOUNDED,
    KIND_CIRCULAR,
    KIND_F16,
    KIND_F32,
    KIND_STEP,
    KINDS,
    MAX_CIRCLE,
    MAX_LEVELS,
    MAX_RANGE,
    Quantizer,
    QuantSpec,
    plan,
    quantizer_for,
)
from tuner_model.core.errors import BlobError, TunerError
from tuner_model.models import build_model
from tuner_model.models.fitted import FittedImage


def _parse(data: bytes) -> tuple[BlobInfo, Reader]:
    _, body = unpack(data)
    r = Reader(body)
    width, height, colour, config, meta = read_header(r)
    n = sum(math.prod(s) for s in expected_shapes(config).values())
    if n > MAX_PARAMETERS:
        raise BlobError(f"blob asks for {n} parameters (limit {MAX_PARAMETERS})")
    return BlobInfo(width, height, config.channels, colour, config, meta, len(data), n), r


def read_info(data: bytes) -> BlobInfo:
    """The header only: cheap, and builds no network."""
    return _parse(data)[0]


# --- payload ----------------------------------------------------------------------------------------


def encode_blob(fitted: FittedImage, spec: QuantSpec | None = None,
                quantizers: dict[str, Quantizer] | None = None) -> bytes:
    """The blob of `fitted`. With no spec and no quantizers every tensor is stored as fp32 (lossless);
    with a spec, tensors are quantized as docs/CODEC.md says; pass the `quantizers` that `quant.snap`
    used so the stored symbols are exactly the snapped model's values."""
    model = fitted.model
    qs = quantizers if quantizers is not None else plan(model, spec)
    shapes = expected_shapes(fitted.config)
    state = model.state_dict()
    w = Writer()
    write_header(w, fitted)
    coded: list[tuple[np.ndarray, entropy.SymbolModel]] = []
    for name, shape in shapes.items():
        if name not in state or tuple(state[name].shape) != shape:
            raise BlobError(f"tensor {name} is missing or has the wrong shape")
        t = state[name].detach().cpu().to(torch.float32)
        q = qs[name]
        if not torch.isfinite(t).all():
            raise BlobError(f"tensor {name} holds non-finite values")
        if q.kind == KIND_F32:
            w.u8(KIND_F32)
            w.raw(t.numpy().astype("<f4").tobytes())
            continue
        if q.kind == KIND_F16:
            w.u8(KIND_F16)
            w.raw(t.numpy().astype("<f2").tobytes())
            continue
        sym = q.symbols(t)
        lo, hi = q.symbol_range(sym)
        if q.kind == KIND_STEP and hi > MAX_RANGE:
            raise BlobError(f"tensor {name} exceeds the step quantizer's range")
        model_ = entropy.best_model(sym, lo, hi) if q.kind != KIND_CIRCULAR else entropy.SymbolModel(lo, hi)
        w.u8(q.kind | (model_.family << 4))
        if q.kind == KIND_BOUNDED or q.kind == KIND_CIRCULAR:
            w.varint(int(q.param))
        else:
            w.f32(q.param)
            w.varint(hi)
        if model_.family != entropy.FAMILY_UNIFORM:
            w.f16(model_.scale)
        coded.append((sym, model_))
    w.raw(entropy.encode(coded))
    return pack(w.getvalue())


def decode_blob(data: bytes) -> FittedImage:
    return _decode(data)[0]


def stored_codings(data: bytes) -> dict[str, tuple[int, float]]:
    """Each stored tensor's quantizer kind and parameter (Q for a bounded one), in the blob's order, read by
    decoding the blob (so with every check decoding makes)."""
    return _decode(data)[1]


def _decode(data: bytes) -> tuple[FittedImage, dict[str, tuple[int, float]]]:
    info, r = _parse(data)
    try:
        model = build_model(info.config)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    state: dict[str, torch.Tensor] = {}
    pending: list[tuple[str, Quantizer, tuple[int, ...]]] = []
    items: list[tuple[int, entropy.SymbolModel]] = []
    codings: dict[str, tuple[int, float]] = {}
    for name, shape in expected_shapes(info.config).items():
        n = math.prod(shape)
        byte = r.u8()
        kind, family = byte & 0x0F, byte >> 4
        if kind not in KINDS or family not in entropy.FAMILIES:
            raise BlobError(f"tensor {name}: unknown coding {byte}")
        if kind == KIND_F32:
            state[name], codings[name] = _floats(r.raw(4 * n), "<f4", shape, name), (kind, 32.0)
            continue
        if kind == KIND_F16:
            state[name], codings[name] = _floats(r.raw(2 * n), "<f2", shape, name), (kind, 16.0)
            continue
        if kind == KIND_BOUNDED:
            param: float = r.varint(1, MAX_LEVELS, "levels")
        elif kind == KIND_CIRCULAR:
            param = r.varint(2, MAX_CIRCLE, "circle steps")
        else:
            param = r.f32("step", 1e-30, 1e30)
        q = quantizer_for(kind, param, model, name)
        codings[name] = (kind, param)
        if kind == KIND_STEP:
            rng = r.varint(0, MAX_RANGE, "symbol range")
            lo, hi = -rng, rng
        else:
            lo, hi = q.symbol_range()
        if kind == KIND_CIRCULAR and family != entropy.FAMILY_UNIFORM:
            raise BlobError(f"tensor {name}: circular symbols are coded uniformly")
        scale = r.f16("scale", 1e-4, 7e4) if family != entropy.FAMILY_UNIFORM else 1.0
        items.append((n, entropy.SymbolModel(lo, hi, family, scale)))
        pending.append((name, q, shape))
    symbols = entropy.decode(r.raw(r.remaining), items)
    for (name, q, shape), s in zip(pending, symbols, strict=True):
        state[name] = q.values(s, shape)
    _load(model, state)
    return FittedImage(info.config, info.width, info.height, model.eval(), info.colour, dict(info.meta)), codings


def _floats(raw: bytes, dtype: str, shape: tuple[int, ...], name: str) -> torch.Tensor:
    a = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    if not np.isfinite(a).all():
        raise BlobError(f"tensor {name} holds non-finite values")
    return torch.from_numpy(a.reshape(shape))


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BlobError(f"blob tensors do not fit the network ({str(e).splitlines()[0]})") from None
