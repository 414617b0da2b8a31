"""The blob header (format version 2, docs/FORMAT.md): image size, colour transform, architecture, the model
configuration (only the fields that differ from ModelConfig's defaults) and the measured metadata; and the
shapes of the tensors the payload then holds. Every field read is bounded before anything is allocated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from tuner_model.codec.bitio import Reader, Writer
from tuner_model.core import colour as colour_mod
from tuner_model.core.errors import BlobError, TunerError
from tuner_model.models.config import ARCHS, ModelConfig
from tuner_model.models.fitted import FittedImage

MAX_PARAMETERS = 4_000_000  # far above any image codec setting; bounds what a header may ask for
MAX_SIDE = 1 << 16
MAX_BLOCK_LIMIT = 256  # the low block has ~2L² points: bound the work a header can ask for
MAX_META_JSON = 4096
COLOURS = ("rgb", "ycbcr", "gray")

# The model configuration as stored: (field, type), in this fixed order. Bit i of the presence mask
# says field i is stored; an absent field takes ModelConfig's default. Appending is how a later
# version adds a field; the order never changes.
CONFIG_FIELDS: tuple[tuple[str, str], ...] = (
    ("channels", "u8"),
    ("input_width", "varint"),
    ("hidden", "widths"),
    ("period", "f64"),
    ("bandlimit", "varint"),
    ("block_limit", "varint"),
    ("low_fraction", "f64"),
    ("freq_seed", "varint"),
    ("bound_low", "f64"),
    ("bound_high", "f64"),
    ("bound_deep", "f64"),
    ("learn_bounds", "u8"),
    ("bound_penalty", "f64"),
    ("hidden_omega", "f64"),
    ("first_omega", "f64"),
    ("ffm_sigma", "f64"),
)
_DEFAULT = ModelConfig()

META_PSNR, META_STEPS, META_SECONDS, META_JSON = 1, 2, 3, 15


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
    """The shapes of the tensors a blob stores, in payload order, computed without allocating a network."""
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


# --- header -----------------------------------------------------------------------------------------


def write_header(w: Writer, fitted: FittedImage) -> None:
    cfg = fitted.config
    w.varint(fitted.width)
    w.varint(fitted.height)
    w.u8(COLOURS.index(fitted.colour) | (ARCHS.index(cfg.arch) << 2))
    present = [getattr(cfg, name) != getattr(_DEFAULT, name) for name, _ in CONFIG_FIELDS]
    w.varint(sum(1 << i for i, p in enumerate(present) if p))
    for (name, typ), p in zip(CONFIG_FIELDS, present, strict=True):
        if not p:
            continue
        v = getattr(cfg, name)
        if typ == "u8":
            w.u8(int(v))
        elif typ == "varint":
            w.varint(int(v))
        elif typ == "widths":
            w.varint(len(v))
            for h in v:
                w.varint(h)
        else:
            w.f64(float(v))
    write_meta(w, fitted.meta)


def write_meta(w: Writer, meta: dict) -> None:
    rest = {k: v for k, v in meta.items() if k not in ("psnr", "steps", "seconds")}
    items: list[tuple[int, object]] = []
    if isinstance(meta.get("psnr"), int | float) and math.isfinite(meta["psnr"]):
        items.append((META_PSNR, float(meta["psnr"])))
    if isinstance(meta.get("steps"), int) and 0 <= meta["steps"] < 1 << 40:
        items.append((META_STEPS, meta["steps"]))
    elif "steps" in meta:
        rest["steps"] = meta["steps"]
    if isinstance(meta.get("seconds"), int | float) and math.isfinite(meta["seconds"]):
        items.append((META_SECONDS, float(meta["seconds"])))
    if rest:
        text = json.dumps(rest, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
        if len(text) > MAX_META_JSON:
            raise BlobError("blob metadata too large")
        items.append((META_JSON, text))
    w.varint(len(items))
    for tag, v in items:
        w.u8(tag)
        if tag == META_STEPS:
            w.varint(v)
        elif tag == META_JSON:
            w.blob(v)
        else:
            w.f32(v)


def read_header(r: Reader) -> tuple[int, int, str, ModelConfig, dict]:
    width = r.varint(1, MAX_SIDE, "width")
    height = r.varint(1, MAX_SIDE, "height")
    flags = r.u8()
    if flags & 0x03 >= len(COLOURS) or (flags >> 2) >= len(ARCHS):
        raise BlobError("blob header: unknown colour transform or architecture")
    colour, arch = COLOURS[flags & 0x03], ARCHS[flags >> 2]
    mask = r.varint(0, (1 << len(CONFIG_FIELDS)) - 1, "configuration mask")
    values: dict = {"arch": arch}
    for i, (name, typ) in enumerate(CONFIG_FIELDS):
        if not mask >> i & 1:
            continue
        if typ == "u8":
            values[name] = r.u8()
        elif typ == "varint":
            values[name] = r.varint(0, (1 << 63) - 1, name)
        elif typ == "widths":
            n = r.varint(1, 8, "hidden layer count")
            values[name] = tuple(r.varint(1, 8192, "hidden width") for _ in range(n))
        else:
            values[name] = r.f64(name)
    if "learn_bounds" in values:
        if values["learn_bounds"] > 1:
            raise BlobError("blob header: bad flag")
        values["learn_bounds"] = bool(values["learn_bounds"])
    try:
        config = ModelConfig(**values)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    if config.block_limit > MAX_BLOCK_LIMIT or config.bandlimit > 1 << 16:
        raise BlobError("blob header: frequency parameters out of range")
    try:
        colour_mod.check(colour, config.channels)
    except TunerError as e:
        raise BlobError(f"blob header: {e}") from None
    meta = read_meta(r)
    return width, height, colour, config, meta


def read_meta(r: Reader) -> dict:
    meta: dict = {}
    n = r.varint(0, 16, "metadata count")
    for _ in range(n):
        tag = r.u8()
        if tag == META_PSNR:
            meta["psnr"] = round(r.f32("psnr"), 4)
        elif tag == META_STEPS:
            meta["steps"] = r.varint(0, (1 << 40) - 1, "steps")
        elif tag == META_SECONDS:
            meta["seconds"] = round(r.f32("seconds"), 3)
        elif tag == META_JSON:
            text = r.blob(MAX_META_JSON, "metadata")
            try:
                extra = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise BlobError("blob metadata is not valid JSON") from None
            if not isinstance(extra, dict):
                raise BlobError("blob metadata must be a JSON object")
            meta.update(extra)
        else:
            raise BlobError(f"blob header: unknown metadata tag {tag}")
    return meta
