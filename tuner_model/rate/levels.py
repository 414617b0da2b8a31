"""The level search: the largest number of quantization levels Q whose blob fits a byte budget.

Blob sizes grow with Q, so the answer is a boundary; it is found on cheap predicted sizes (the entropy
coder's length computed from its models' probabilities, no coding) and confirmed on real blobs, so the
budget rests on real sizes only. Pure search over a size function, plus `search_levels` that sizes blobs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from tuner_model.codec import encode_blob, entropy
from tuner_model.codec.quant import MAX_LEVELS, QuantSpec
from tuner_model.models.fitted import FittedImage


def _bisect_levels(size: Callable[[int], int], budget: int, fits: int, over: int) -> int:
    """The largest Q in [fits, over) at most `budget`, given size(fits) <= budget < size(over): sizes
    grow with Q (more levels, more bits)."""
    while over - fits > 1:
        mid = (fits + over) // 2
        if size(mid) <= budget:
            fits = mid
        else:
            over = mid
    return fits


def _bracket_from(size: Callable[[int], int], budget: int, start: int, hi: int) -> int | None:
    """The largest Q in 1..hi whose size is at most `budget` (None when even Q = 1 is too big), searched
    from a guess: probes 1, 2, 4, ... levels away from `start` until the boundary is bracketed, then
    bisects. An exact guess costs two sizes."""
    start = min(max(start, 1), hi)
    if size(start) <= budget:
        fits, offset = start, 1
        while fits < hi:
            nxt = min(hi, start + offset)
            if size(nxt) > budget:
                return _bisect_levels(size, budget, fits, nxt)
            fits, offset = nxt, offset * 2
        return hi
    over, offset = start, 1
    while over > 1:
        nxt = max(1, start - offset)
        if size(nxt) <= budget:
            return _bisect_levels(size, budget, nxt, over)
        over, offset = nxt, offset * 2
    return None


_INTERPOLATIONS = 3


def _estimate_levels(size: Callable[[int], int], budget: int, hi: int) -> int | None:
    """A Q near the largest one in 1..hi whose size is at most `budget` (None when even Q = 1 is too
    big), in a few probes: a blob grows about linearly in log Q (each doubling of the levels adds about
    a bit per weight), so regula falsi in log Q between 1 and hi lands within a few levels."""
    fits, s_fits = 1, size(1)
    if s_fits > budget:
        return None
    over, s_over = hi, size(hi)
    if s_over <= budget:
        return hi
    for _ in range(_INTERPOLATIONS):
        if over - fits <= 1:
            break
        t = (budget - s_fits) / (s_over - s_fits)
        q = min(max(round(fits * (over / fits) ** t), fits + 1), over - 1)
        s = size(q)
        if s <= budget:
            fits, s_fits = q, s
        else:
            over, s_over = q, s
    return fits


def find_levels(real: Callable[[int], int], predicted: Callable[[int], int], budget: int, hi: int,
                 guess: int | None = None) -> int | None:
    """The largest Q in 1..hi whose real size is at most `budget` (None when even Q = 1 is too big).
    The boundary is found on the cheap predicted sizes (from `guess`, or from an estimate), then
    confirmed on real ones, starting there: with a prediction exact to a word, two real sizes."""
    start = guess if guess is not None else _estimate_levels(predicted, budget, hi)
    if start is not None:
        start = _bracket_from(predicted, budget, start, hi)
    return _bracket_from(real, budget, start or 1, hi)


def search_levels(fitted: FittedImage, spec: QuantSpec, budget: int, hi: int = 4096,
                   guess: int | None = None) -> int | None:
    """The largest Q whose blob is at most `budget` bytes (None when even Q = 1 is too big); `guess` is
    a Q expected near the answer (the search before fine-tuning, for the one after).

    Searches on predicted blob sizes (`entropy.predicting`: the coder's length computed from the
    models' probabilities, no coding), then on real blobs around the predicted answer: measured 3.3
    predicted and 2.0 real blobs a search, where a bisection coded ~13. The answer rests on real sizes
    only."""
    hi = min(hi, MAX_LEVELS)

    @functools.cache
    def real(q: int) -> int:
        return len(encode_blob(fitted, spec.with_levels(q)))

    @functools.cache
    def predicted(q: int) -> int:
        with entropy.predicting():
            return len(encode_blob(fitted, spec.with_levels(q)))

    return find_levels(real, predicted, budget, hi, guess)
