"""Entropy coding of the integer symbols with constriction's ANS coder and a per-tensor parametric
model (uniform, quantized Gaussian or quantized Laplace, zero mean, one f16 scale). The encoder tries
each family and a few scales around the empirical spread and keeps the one that codes shortest: a
histogram would cost more header than it saves on tensors of a few thousand symbols.

"Codes shortest" is computed, not tried: constriction's models give each symbol an integer probability
out of 2**24 by a fixed recipe (`probabilities` repeats it), so a candidate's cost is the symbols'
histogram times -log2 of those probabilities, and only the winner goes through the coder. The ANS
stream's length follows from the same sums (`predicted_length`), which lets the level search size a
blob without coding it.

`StreamDecoder` reads the stream item by item, so a context model (the latent grids' LaplaceField, one mean
and scale per symbol) can depend on symbols already decoded. The module keeps the coder's models, their
costs and the stream in one place. Over 300 lines: the models, their costs and both ends of the stream.

A tensor whose range holds a single symbol (lo == hi: a step tensor of zeros) costs nothing: its
symbols are known without reading the stream, so they are not in it (constriction has no one-symbol
model)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from tuner_model.core.errors import BlobError

FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE = 0, 1, 2
FAMILIES = (FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE)
_SCALE_FACTORS = (0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5)
PRECISION = 24  # constriction's default models: probabilities are integers out of 2**PRECISION
_ONE = 1 << PRECISION
WORD_BITS = 32  # the AnsCoder's compressed words
SCALE_BITS = 16  # the f16 scale a non-uniform model adds to its tensor's descriptor in the blob


@dataclass(frozen=True)
class SymbolModel:
    lo: int
    hi: int
    family: int = FAMILY_UNIFORM
    scale: float = 1.0  # exactly representable in f16 (it is stored as one)

    @property
    def single(self) -> bool:
        """One possible symbol: nothing to code."""
        return self.lo == self.hi

    def build(self):
        import constriction

        cm = constriction.stream.model

        if self.single:
            raise ValueError("a one-symbol range is not coded")
        if self.family == FAMILY_UNIFORM:
            if self.lo == 0:
                return cm.Uniform(self.hi + 1), 0
            # Uniform is defined on 0..size-1: code s - lo.
            return cm.Uniform(self.hi - self.lo + 1), self.lo
        if self.family == FAMILY_GAUSSIAN:
            return cm.QuantizedGaussian(self.lo, self.hi, 0.0, self.scale), 0
        return cm.QuantizedLaplace(self.lo, self.hi, 0.0, self.scale), 0


def _f16(x: float) -> float:
    return float(np.float16(min(max(x, 1e-3), 6e4)))


def histogram(symbols: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Counts of the symbols lo..hi (index 0 is lo)."""
    shifted = np.asarray(symbols, dtype=np.int64).reshape(-1) - lo
    if shifted.size and shifted.min() < 0:  # bincount would refuse them anyway, less clearly
        raise ValueError(f"symbols below their range {lo}..{hi}")
    counts = np.bincount(shifted, minlength=hi - lo + 1)
    if counts.size > hi - lo + 1:
        raise ValueError(f"symbols above their range {lo}..{hi}")
    return counts


def candidates(hist: np.ndarray, lo: int, hi: int) -> list[SymbolModel]:
    """Uniform, then each family at scales around the spread of the histogram's symbols."""
    out = [SymbolModel(lo, hi)]
    count = int(hist.sum())
    if lo == hi or count == 0:
        return out
    s = np.arange(lo, hi + 1, dtype=np.float64)
    std = max(math.sqrt(float(hist @ (s * s)) / count), 0.3)
    mad = max(float(hist @ np.abs(s)) / count, 0.3)
    out += [SymbolModel(lo, hi, FAMILY_GAUSSIAN, _f16(std * f)) for f in _SCALE_FACTORS]
    out += [SymbolModel(lo, hi, FAMILY_LAPLACE, _f16(mad * f)) for f in _SCALE_FACTORS]
    return out


def _cdf(family: int, scales: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A zero-mean law's distribution function at x, one row per scale, as the `probability` crate
    that constriction uses writes it (float rounding aside)."""
    z = x[None, :] / scales[:, None]
    if family == FAMILY_GAUSSIAN:
        return 0.5 * (1.0 + torch.special.erf(torch.from_numpy(z / math.sqrt(2.0))).numpy())
    return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(z, 0.0)))


_ROW_CACHE: dict[SymbolModel, np.ndarray] = {}  # a search asks for the same models again and again
_ROW_CACHE_SIZE = 256


def _probability_rows(models: list[SymbolModel]) -> np.ndarray:
    """`probabilities` of several models of one range, one row each (each law's scales in one pass)."""
    lo, hi = models[0].lo, models[0].hi
    n = hi - lo + 1
    out = np.empty((len(models), n), dtype=np.int64)
    todo: dict[int, list[int]] = {}
    for i, m in enumerate(models):
        row = _ROW_CACHE.get(m)
        if row is not None:
            out[i] = row
        else:
            todo.setdefault(FAMILY_UNIFORM if m.single else m.family, []).append(i)
    free = float(_ONE - 1 - (n - 1))
    edges = np.arange(lo, hi + 2, dtype=np.float64) - 0.5
    for family, rows in todo.items():
        if family == FAMILY_UNIFORM:
            out[rows] = _uniform_probabilities(n)
            continue
        scales = np.array([models[i].scale for i in rows], dtype=np.float64)
        # Rust's float-to-integer cast truncates; the values are non-negative, so it is a floor.
        cum = np.floor(free * _cdf(family, scales, edges)).astype(np.int64) + np.arange(n + 1)
        cum[:, 0], cum[:, -1] = 0, _ONE
        out[rows] = np.diff(cum, axis=1)
    if len(_ROW_CACHE) > _ROW_CACHE_SIZE:
        _ROW_CACHE.clear()
    for rows in todo.values():
        for i in rows:
            _ROW_CACHE[models[i]] = out[i].copy()
    return out


def _uniform_probabilities(n: int) -> np.ndarray:
    if n == 1:
        return np.array([_ONE], dtype=np.int64)
    p = np.full(n, _ONE // n, dtype=np.int64)
    p[-1] = _ONE - (n - 1) * (_ONE // n)
    return p


def probabilities(model: SymbolModel) -> np.ndarray:
    """The integer probability (out of 2**PRECISION) that constriction's model gives each symbol lo..hi.

    Uniform (uniform.rs): 2**P // n per symbol, the remainder to the last. Quantized laws (quantize.rs,
    the leaky quantizer): with free = 2**P - 1 - (hi - lo), the cumulative left of symbol s is
    floor(free·F(s - 1/2)) + (s - lo), pinned to 0 at lo and 2**P right of hi, so that every symbol of
    the range keeps at least 1. A single-symbol range has probability one."""
    return _probability_rows([model])[0]


def candidate_bits(hist: np.ndarray, models: list[SymbolModel]) -> np.ndarray:
    """The information content, in bits, of symbols with this histogram under each model (one range)."""
    used = hist > 0
    if not models or not used.any():
        return np.zeros(len(models))
    p = _probability_rows(models)[:, used].astype(np.float64)
    return (PRECISION - np.log2(p)) @ hist[used].astype(np.float64)


def code_bits(hist: np.ndarray, model: SymbolModel) -> float:
    """The information content, in bits, of symbols with this histogram under the model."""
    return float(candidate_bits(hist, [model])[0])


def stream_bytes(bits: float) -> int:
    """The length of an ANS stream whose final state carries `bits` (>= 0, after the start discount):
    floor(bits / 32) + 1 words, as the coder flushes whole 32-bit words and ends with its state's one or
    two words, which always leave room for 0 to 32 more bits (measured over random tensors: 0.1–31.9)."""
    return WORD_BITS // 8 * (math.floor(bits / WORD_BITS) + 1)


def predicted_length(items: list[tuple[np.ndarray, SymbolModel]]) -> int:
    """`len(encode(items))`, predicted from the models' probabilities without running the coder: exact
    but for the coder's rounding, which can tip the count by a word when `bits` lands next to a multiple
    of 32 (measured: < 0.1 bit of excess)."""
    coded = [(s, m) for s, m in items if s.size and not m.single]
    if not any((s != m.lo).any() for s, m in coded):
        return 0  # every symbol is its range's lowest: the coder's state stays 0, nothing is written
    bits = sum(code_bits(histogram(s, m.lo, m.hi), m) for s, m in coded)
    return stream_bytes(bits - _start_discount_bits(coded))


def _start_discount_bits(coded: list[tuple[np.ndarray, SymbolModel]]) -> float:
    """What the coder's start saves on the symbols' information. It starts from state 0 and codes the
    stream backwards; a symbol whose cumulative is 0 (its range's lowest) leaves state 0 as it is, so
    the stream's final run of lowest symbols costs nothing, and the symbol before that run leaves the
    state at its cumulative c, log2(c) bits where its probability p would say 24 - log2(p)."""
    saved = 0.0
    for s, m in reversed(coded):
        p = probabilities(m)
        differs = np.flatnonzero(s[::-1] != m.lo)
        run = int(differs[0]) if differs.size else s.size
        saved += run * (PRECISION - math.log2(p[0]))
        if run < s.size:
            k = int(s[s.size - 1 - run]) - m.lo
            saved += PRECISION - math.log2(p[k]) - math.log2(int(p[:k].sum()))
            break
    return saved


_PREDICTING: ContextVar[bool] = ContextVar("entropy_predicting", default=False)


@contextlib.contextmanager
def predicting() -> Iterator[None]:
    """Inside this block `encode` returns zeros of the predicted stream length instead of coding, so
    that a blob's size (header, descriptors, container: everything but the stream is exact) costs only
    the quantization. The blobs made inside cannot be decoded: for sizing only (the level search)."""
    token = _PREDICTING.set(True)
    try:
        yield
    finally:
        _PREDICTING.reset(token)


def encode(items: list[tuple[np.ndarray, SymbolModel | LaplaceField]]) -> bytes:
    """All tensors' symbols in one ANS stream (pushed in reverse so they decode in order)."""
    if _PREDICTING.get():
        return bytes(predicted_length(items))
    import constriction

    AnsCoder = constriction.stream.stack.AnsCoder  # noqa: N806 - a class

    coder = AnsCoder()
    for symbols, model in reversed(items):
        if symbols.size == 0 or (isinstance(model, SymbolModel) and model.single):
            continue
        _push(coder, symbols, model)
    return coder.get_compressed().astype("<u4").tobytes()


def code_length(symbols: np.ndarray, model: SymbolModel) -> int:
    """The real coded length in bytes (runs the coder)."""
    return len(encode([(symbols, model)]))


def best_model(symbols: np.ndarray, lo: int, hi: int) -> SymbolModel:
    """The candidate with the fewest bits for these symbols, its stored scale included (the first of
    equals: uniform first)."""
    hist = histogram(symbols, lo, hi)
    cands = candidates(hist, lo, hi)
    bits = candidate_bits(hist, cands) + [0 if c.family == FAMILY_UNIFORM else SCALE_BITS for c in cands]
    return cands[int(np.argmin(bits))]  # argmin: the first of equals


@dataclass(frozen=True)
class LaplaceField:
    """Symbols lo..hi each with its own Laplace mean and scale (a context model's output)."""

    lo: int
    hi: int
    means: np.ndarray
    scales: np.ndarray

    def build(self):
        import constriction

        return constriction.stream.model.QuantizedLaplace(self.lo, self.hi)


def _push(coder, symbols: np.ndarray, model: SymbolModel | LaplaceField) -> None:
    if isinstance(model, LaplaceField):
        coder.encode_reverse(symbols.astype(np.int32), model.build(), model.means, model.scales)
        return
    m, offset = model.build()
    coder.encode_reverse((symbols - offset).astype(np.int32), m)


class StreamDecoder:
    """Reads one ANS stream item by item, so a later item's model may depend on earlier symbols; any
    inconsistency of a hostile stream is a BlobError."""

    def __init__(self, data: bytes) -> None:
        import constriction

        if len(data) % 4:
            raise BlobError("entropy-coded payload is not a whole number of words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        coder_class = constriction.stream.stack.AnsCoder
        self._coder = coder_class(words) if words.size else coder_class()

    def read(self, count: int, model: SymbolModel | LaplaceField) -> np.ndarray:
        if count == 0 or (isinstance(model, SymbolModel) and model.single):
            return np.full(count, model.lo, dtype=np.int64)
        with _coder_errors():
            if isinstance(model, LaplaceField):
                if len(model.means) != count or len(model.scales) != count:
                    raise BlobError("context model does not match the symbols")
                return np.asarray(self._coder.decode(model.build(), model.means, model.scales), dtype=np.int64)
            m, offset = model.build()
            return np.asarray(self._coder.decode(m, count), dtype=np.int64) + offset

    def finish(self) -> None:
        with _coder_errors():
            leftover = self._coder.num_valid_bits() if hasattr(self._coder, "num_valid_bits") else 0
        if leftover:
            raise BlobError("entropy-coded payload has trailing data")


@contextlib.contextmanager
def _coder_errors() -> Iterator[None]:
    try:
        yield
    except BlobError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    # The coder reports malformed streams in its own ways; a Rust panic arrives as pyo3's PanicException,
    # a BaseException, so a hostile blob that found one still gets the codec's own error.
    except BaseException as e:  # noqa: BLE001
        raise BlobError(f"entropy-coded payload is corrupt ({type(e).__name__})") from None


def decode(data: bytes, items: list[tuple[int, SymbolModel]]) -> list[np.ndarray]:
    """Symbols for each (count, model)."""
    stream = StreamDecoder(data)
    out = [stream.read(count, model) for count, model in items]
    stream.finish()
    return out
