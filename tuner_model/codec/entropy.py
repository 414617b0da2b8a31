"""Entropy coding of the integer symbols with constriction's ANS coder and a per-tensor parametric
model (uniform, quantized Gaussian or quantized Laplace, zero mean, one f16 scale). The encoder tries
each family and a few scales around the empirical spread and keeps the one that codes shortest: a
histogram would cost more header than it saves on tensors of a few thousand symbols."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BlobError

FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE = 0, 1, 2
FAMILIES = (FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE)
_SCALE_FACTORS = (0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5)


@dataclass(frozen=True)
class SymbolModel:
    lo: int
    hi: int
    family: int = FAMILY_UNIFORM
    scale: float = 1.0  # exactly representable in f16 (it is stored as one)

    def build(self):
        import constriction

        cm = constriction.stream.model

        if self.family == FAMILY_UNIFORM or self.lo == self.hi:
            if self.lo == 0:
                return cm.Uniform(self.hi + 1), 0
            # Uniform is defined on 0..size-1: code s - lo.
            return cm.Uniform(self.hi - self.lo + 1), self.lo
        if self.family == FAMILY_GAUSSIAN:
            return cm.QuantizedGaussian(self.lo, self.hi, 0.0, self.scale), 0
        return cm.QuantizedLaplace(self.lo, self.hi, 0.0, self.scale), 0


def _f16(x: float) -> float:
    return float(np.float16(min(max(x, 1e-3), 6e4)))


def candidates(symbols: np.ndarray, lo: int, hi: int) -> list[SymbolModel]:
    out = [SymbolModel(lo, hi)]
    if lo == hi or symbols.size == 0:
        return out
    s = symbols.astype(np.float64)
    std = max(float(np.sqrt((s * s).mean())), 0.3)
    mad = max(float(np.abs(s).mean()), 0.3)
    out += [SymbolModel(lo, hi, FAMILY_GAUSSIAN, _f16(std * f)) for f in _SCALE_FACTORS]
    out += [SymbolModel(lo, hi, FAMILY_LAPLACE, _f16(mad * f)) for f in _SCALE_FACTORS]
    return out


def encode(items: list[tuple[np.ndarray, SymbolModel]]) -> bytes:
    """All tensors' symbols in one ANS stream (pushed in reverse so they decode in order)."""
    import constriction

    AnsCoder = constriction.stream.stack.AnsCoder  # noqa: N806 - a class

    coder = AnsCoder()
    for symbols, model in reversed(items):
        if symbols.size == 0:
            continue
        m, offset = model.build()
        coder.encode_reverse((symbols - offset).astype(np.int32), m)
    return coder.get_compressed().astype("<u4").tobytes()


def code_length(symbols: np.ndarray, model: SymbolModel) -> int:
    return len(encode([(symbols, model)]))


def best_model(symbols: np.ndarray, lo: int, hi: int) -> SymbolModel:
    best, best_len = None, None
    for cand in candidates(symbols, lo, hi):
        n = code_length(symbols, cand)
        if best_len is None or n < best_len:
            best, best_len = cand, n
    assert best is not None
    return best


def decode(data: bytes, items: list[tuple[int, SymbolModel]]) -> list[np.ndarray]:
    """Symbols for each (count, model); any inconsistency of a hostile stream is a BlobError."""
    import constriction

    AnsCoder = constriction.stream.stack.AnsCoder  # noqa: N806 - a class

    if len(data) % 4:
        raise BlobError("entropy-coded payload is not a whole number of words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        coder = AnsCoder(words) if words.size else AnsCoder()
        out = []
        for count, model in items:
            if count == 0:
                out.append(np.zeros(0, dtype=np.int64))
                continue
            m, offset = model.build()
            s = np.asarray(coder.decode(m, count), dtype=np.int64) + offset
            out.append(s)
        leftover = coder.num_valid_bits() if hasattr(coder, "num_valid_bits") else 0
    except BlobError:
        raise
    except Exception as e:  # noqa: BLE001 - the coder reports malformed streams in its own ways
        raise BlobError(f"entropy-coded payload is corrupt ({type(e).__name__})") from None
    if leftover:
        raise BlobError("entropy-coded payload has trailing data")
    return out
