"""The latent-grid model's blob (container version 3, model kind 1; docs/FORMAT.md).

    kind u8 (=1) | width, height varint | configuration | psnr f32
    | per network tensor: step exponent u8 (step = 2^-e), symbol range r varint, family|scale
    | context model: its integer weights, zigzag varints (models/latent_context.py)
    | per latent grid: symbol range r varint
    | one ANS stream: every tensor's symbols, then the grids from the coarsest to the finest, each as
      its anchors then its other latents (row-major)

Symbols are integers in -r..r: a network value is symbol · step; a latent is the symbol itself. Each
network tensor has one parametric model (uniform, or zero-mean quantized Gaussian or Laplace with an f16
scale), chosen by the encoder as the shortest (codec/entropy.py); each latent has its own Laplace, whose
mean and scale the context model computes from already decoded latents.

Hostile input: every field is bounded before anything is allocated, and the decode cost is bounded by
the blob's bytes: at most MAX_PIXELS_PER_BYTE native pixels per byte of blob (the latents scale with the
pixels) and at most MAX_MACS_PER_PIXEL multiply-adds per rendered pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.codec import entropy
from tuner_model.codec.bitio import Reader, Writer
from tuner_model.codec.container import MAGIC, pack, unpack
from tuner_model.core.errors import BlobError, TunerError
from tuner_model.models import latent_context
from tuner_model.models.latent import LatentConfig, LatentTunerNet, feature_width, grid_shapes, macs_per_pixel

VERSION = 3
KIND_LATENT = 1
MAX_SIDE = 1 << 15
MAX_PIXELS_PER_BYTE = 1024  # 0.0078 bpp: far below any useful rate, and bounds the latents a blob declares
MAX_MACS_PER_PIXEL = 8192
MAX_STEP_EXPONENT = 24
MAX_NETWORK_RANGE = 1 << 20
MAX_LATENT_RANGE = 1 << 15


@dataclass(frozen=True)
class LatentInfo:
    width: int
    height: int
    config: LatentConfig
    psnr: float | None
    bytes: int
    latents: int
    network_parameters: int


def _write_config(w: Writer, c: LatentConfig) -> None:
    w.u8(c.levels)
    w.varint(c.input_width)
    w.u8(len(c.hidden))
    for h in c.hidden:
        w.varint(h)
    w.u8(c.channels)
    w.varint(c.bandlimit)
    w.varint(c.block_limit)
    w.varint(c.freq_seed)
    for v in (c.period, c.low_fraction, c.bound_low, c.bound_high, c.bound_deep):
        w.f32(v)
    w.u8(c.neighbours)
    w.f32(c.latent_step)


def _read_config(r: Reader) -> LatentConfig:
    levels = r.u8()
    input_width = r.varint(2, 256, "input width")
    hidden = tuple(r.varint(1, 128, "hidden width") for _ in range(r.u8()))
    channels = r.u8()
    bandlimit = r.varint(1, 1024, "bandlimit")
    block_limit = r.varint(0, 64, "block limit")
    freq_seed = r.varint(0, (1 << 32) - 1, "frequency seed")
    period = r.f32("period", 0.5, 1e4)
    low_fraction = r.f32("low fraction", 0.0, 1.0)
    bounds = [r.f32("bound", 1e-6, 100.0) for _ in range(3)]
    neighbours = r.u8()
    latent_step = r.f32("latent step", 1e-3, 1e3)
    try:
        return LatentConfig(levels, input_width, hidden, channels, period, bandlimit, block_limit, low_fraction,
                            freq_seed, *bounds, neighbours, latent_step)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None


def _parse(data: bytes) -> tuple[LatentInfo, Reader]:
    version, body = unpack(data, (VERSION,))
    del version
    r = Reader(body)
    if r.u8() != KIND_LATENT:
        raise BlobError("unknown model kind")
    width = r.varint(1, MAX_SIDE, "width")
    height = r.varint(1, MAX_SIDE, "height")
    if width * height > MAX_PIXELS_PER_BYTE * len(data):
        raise BlobError(f"blob of {len(data)} bytes declares {width}x{height} pixels: too many for its size")
    config = _read_config(r)
    if macs_per_pixel(config) > MAX_MACS_PER_PIXEL:
        raise BlobError("blob declares a network above the decoder's cost limit")
    psnr = r.f32("psnr", 0.0, 1000.0)
    latents = sum(h * w for h, w in grid_shapes(width, height, config.levels))
    net = sum(math.prod(s) for s in network_shapes(config).values())
    info = LatentInfo(width, height, config, psnr if psnr > 0 else None, len(data), latents, net)
    return info, r


def is_latent_blob(data: bytes) -> bool:
    """Whether `data` claims to be a latent-grid blob (version 3); the parser checks the rest."""
    return len(data) > len(MAGIC) and bytes(data[: len(MAGIC)]) == MAGIC and data[len(MAGIC)] == VERSION


def read_latent_info(data: bytes) -> LatentInfo:
    return _parse(data)[0]


def network_shapes(config: LatentConfig) -> dict[str, tuple[int, ...]]:
    """The stored network tensors in blob order (the latents follow)."""
    shapes: dict[str, tuple[int, ...]] = {"phase": (config.input_width,)}
    widths = (feature_width(config), *config.hidden)
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        shapes[f"hidden.{i}"] = (fan_out, fan_in)
        shapes[f"hidden_bias.{i}"] = (fan_out,)
    shapes["out.weight"] = (config.channels, widths[-1])
    shapes["out.bias"] = (config.channels,)
    return shapes


def _write_model(w: Writer, symbols: np.ndarray, bound: int) -> tuple[np.ndarray, entropy.SymbolModel]:
    r = int(np.abs(symbols).max()) if symbols.size else 0
    if r > bound:
        raise BlobError("symbols exceed the format's range")
    w.varint(r)
    model = entropy.best_model(symbols, -r, r) if r else entropy.SymbolModel(0, 0)
    w.u8(model.family)
    if model.family != entropy.FAMILY_UNIFORM:
        w.f16(model.scale)
    return symbols, model


def _read_model(r: Reader, bound: int) -> entropy.SymbolModel:
    rng = r.varint(0, bound, "symbol range")
    family = r.u8()
    if family not in entropy.FAMILIES:
        raise BlobError(f"unknown entropy model {family}")
    scale = r.f16("scale", 1e-4, 7e4) if family != entropy.FAMILY_UNIFORM else 1.0
    return entropy.SymbolModel(-rng, rng, family, scale)


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(v: int) -> int:
    return v // 2 if v % 2 == 0 else -(v + 1) // 2


def context_shapes(levels: int) -> dict[str, tuple[int, ...]]:
    return {
        "anchor_mean": (latent_context.ANCHOR_FEATURES,),
        "anchor_scale": (latent_context.ANCHOR_FEATURES,),
        "other_mean": (latent_context.OTHER_FEATURES,),
        "other_scale": (latent_context.OTHER_FEATURES,),
        "offsets": (2, levels),
    }


def _latent_fields(weights: dict[str, np.ndarray], grids: list[np.ndarray], ranges: list[int]):
    """(symbols, LaplaceField) in decode order: coarsest grid first, anchors then the others."""
    out = []
    for lv in reversed(range(len(grids))):
        g = grids[lv]
        parent = grids[lv + 1] if lv + 1 < len(grids) else None
        mask = latent_context.anchor_mask(*g.shape)
        for anchors, sel in ((True, mask), (False, ~mask)):
            means, scales = latent_context.symbol_parameters(weights, lv, g, parent, anchors)
            out.append((g[sel], entropy.LaplaceField(-ranges[lv], ranges[lv], means, scales)))
    return out


def encode_latent_blob(model: LatentTunerNet, context: dict[str, np.ndarray], step_exponents: dict[str, int],
                       psnr: float | None = None) -> bytes:
    """The blob of `model`, whose latents are integers and whose network tensors are on the grids
    2^-e given by `step_exponents` (use `snap_network` first so the stored values are the model's)."""
    config = model.config
    width, height = model.native
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    w = Writer()
    w.u8(KIND_LATENT)
    w.varint(width)
    w.varint(height)
    _write_config(w, config)
    w.f32(float(psnr) if psnr else 0.0)
    coded: list[tuple[np.ndarray, entropy.SymbolModel]] = []
    for name in network_shapes(config):
        e = step_exponents[name]
        if not 0 <= e <= MAX_STEP_EXPONENT:
            raise BlobError(f"step exponent of {name} out of range")
        w.u8(e)
        sym = torch.round(state[name] * 2.0**e).to(torch.int64).numpy().reshape(-1)
        coded.append(_write_model(w, sym, MAX_NETWORK_RANGE))
    for name, shape in context_shapes(config.levels).items():
        values = np.asarray(context[name], dtype=np.int64)
        if values.shape != shape or np.abs(values).max(initial=0) > latent_context.MAX_WEIGHT:
            raise BlobError(f"context weights {name} have the wrong shape or range")
        for v in values.reshape(-1):
            w.varint(_zigzag(int(v)))
    grids = [torch.round(state[f"latents.{lv}"]).to(torch.int64).numpy() for lv in range(config.levels)]
    ranges = [int(np.abs(g).max(initial=0)) for g in grids]
    for r in ranges:
        if r > MAX_LATENT_RANGE:
            raise BlobError("latents exceed the format's range")
        w.varint(r)
    fields = _latent_fields(context, grids, ranges)
    w.raw(entropy.encode([c for c in coded if not c[1].single] + [f for f in fields if f[1].hi > f[1].lo]))
    return pack(w.getvalue(), VERSION)


def decode_latent_blob(data: bytes) -> tuple[LatentTunerNet, LatentInfo]:
    info, r = _parse(data)
    config = info.config
    shapes = dict(network_shapes(config))
    exponents = {}
    models: list[tuple[str, tuple[int, ...], entropy.SymbolModel]] = []
    for name, shape in shapes.items():
        exponents[name] = r.u8()
        if exponents[name] > MAX_STEP_EXPONENT:
            raise BlobError(f"step exponent of {name} out of range")
        models.append((name, shape, _read_model(r, MAX_NETWORK_RANGE)))
    context = {}
    for name, shape in context_shapes(config.levels).items():
        n = math.prod(shape)
        values = [_unzigzag(r.varint(0, 2 * latent_context.MAX_WEIGHT, "context weight")) for _ in range(n)]
        context[name] = np.asarray(values, dtype=np.int64).reshape(shape)
    ranges = [r.varint(0, MAX_LATENT_RANGE, "latent range") for _ in range(config.levels)]
    stream = entropy.StreamDecoder(r.raw(r.remaining))
    state: dict[str, torch.Tensor] = {}
    for name, shape, m in models:
        sym = stream.read(math.prod(shape), m)
        values = torch.from_numpy(np.asarray(sym, dtype=np.float64).reshape(shape)).to(torch.float32)
        state[name] = values * 2.0 ** -exponents[name]
    shapes_l = grid_shapes(info.width, info.height, config.levels)
    grids: list[np.ndarray | None] = [None] * config.levels
    for lv in reversed(range(config.levels)):
        g = np.zeros(shapes_l[lv], dtype=np.int64)
        mask = latent_context.anchor_mask(*g.shape)
        for anchors, sel in ((True, mask), (False, ~mask)):
            count = int(sel.sum())
            if ranges[lv] == 0:
                continue
            means, scales = latent_context.symbol_parameters(context, lv, g, grids[lv + 1] if lv + 1 < config.levels
                                                             else None, anchors)
            g[sel] = stream.read(count, entropy.LaplaceField(-ranges[lv], ranges[lv], means, scales))
        grids[lv] = g
        state[f"latents.{lv}"] = torch.from_numpy(g.astype(np.float32))
    stream.finish()
    net = LatentTunerNet(config, info.width, info.height)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BlobError(f"blob tensors do not fit the network ({str(e).splitlines()[0]})") from None
    return net.eval(), info


def snap_network(model: LatentTunerNet, step_exponents: dict[str, int]) -> None:
    """Round each network tensor to its grid 2^-e in place (the values the blob will store)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, e in step_exponents.items():
            p = params[name]
            p.copy_(torch.round(p * 2.0**e) * 2.0**-e)
