"""The entropy coder's computed lengths (each candidate model's cost from constriction's probabilities,
without coding) against the real coder, and the level search that relies on them: it must pick the
same Q as a bisection on real blob sizes and never exceed the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner_model.codec import QuantSpec, encode_blob, entropy
from tuner_model.codec.entropy import FAMILY_GAUSSIAN, FAMILY_LAPLACE, FAMILY_UNIFORM, SymbolModel
from tuner_model.models import build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate import levels
from tuner_model.rate.levels import find_levels, search_levels
from tuner_model.rate.plan import default_config
from tuner_model.train.fit import FitOptions, fit_image

WORD = 4  # the ANS stream is whole 32-bit words; the coder's rounding can tip a prediction by one


def _symbols(rng: np.random.Generator, law: str, spread: float, n: int, lo: int, hi: int) -> np.ndarray:
    x = rng.laplace(0, spread, n) if law == "laplace" else rng.normal(0, spread, n)
    return np.clip(np.round(x), lo, hi).astype(np.int64)


@pytest.mark.parametrize("family", [FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE])
@pytest.mark.parametrize("q,spread,n", [(1, 0.5, 300), (4, 2.0, 5000), (40, 6.0, 20000), (300, 150.0, 3000),
                                        (2000, 30.0, 40000)])
def test_predicted_length_matches_the_coder(family: int, q: int, spread: float, n: int) -> None:
    rng = np.random.default_rng(q + family)
    misses = []
    for law in ("normal", "laplace"):
        s = _symbols(rng, law, spread, n, -q, q)
        for scale_factor in (0.3, 1.0, 3.0):
            model = SymbolModel(-q, q, family, entropy._f16(spread * scale_factor))
            misses.append(entropy.predicted_length([(s, model)]) - entropy.code_length(s, model))
    assert all(abs(m) <= WORD for m in misses) and misses.count(0) >= len(misses) - 1, misses


def test_predicted_length_of_a_whole_stream_is_exact_but_for_rare_words() -> None:
    """Several tensors in one stream, as in a blob, 200 draws: one word off at most, and rarely."""
    rng = np.random.default_rng(11)
    misses = []
    for _ in range(200):
        items = []
        for _ in range(int(rng.integers(1, 4))):
            q = int(rng.integers(1, 300))
            s = _symbols(rng, "normal", float(rng.uniform(0.3, q)), int(rng.integers(1, 3000)), -q, q)
            items.append((s, entropy.best_model(s, -q, q)))
        misses.append(entropy.predicted_length(items) - len(entropy.encode(items)))
    assert all(abs(m) <= WORD for m in misses) and misses.count(0) >= 0.97 * len(misses)


def test_probabilities_are_a_full_valid_table() -> None:
    for model in (SymbolModel(-5, 5), SymbolModel(0, 6), SymbolModel(-3, 3, FAMILY_GAUSSIAN, 0.001),
                  SymbolModel(-3, 3, FAMILY_LAPLACE, 60000.0), SymbolModel(-1000, 1000, FAMILY_GAUSSIAN, 2.0)):
        p = entropy.probabilities(model)
        assert p.shape == (model.hi - model.lo + 1,)
        assert p.min() >= 1 and p.sum() == 1 << entropy.PRECISION


def test_a_model_far_too_narrow_or_wide_still_codes_every_symbol() -> None:
    # Symbols in the leaky tails (probability 1 out of 2**24): the prediction holds there too.
    s = np.array([-50, 50, 0, 49, -49] * 20)
    for scale in (0.001, 6e4):
        model = SymbolModel(-50, 50, FAMILY_GAUSSIAN, scale)
        assert entropy.predicted_length([(s, model)]) == entropy.code_length(s, model)


@pytest.mark.parametrize("family", [FAMILY_UNIFORM, FAMILY_GAUSSIAN, FAMILY_LAPLACE])
def test_all_equal_symbols(family: int) -> None:
    """Including the coder's quirk: it starts from state 0, which the lowest symbol leaves at 0, so a
    stream that ends in a run of lowest symbols does not pay for them (all of them: an empty stream)."""
    model = SymbolModel(-7, 7, family, 1.0)
    for value in (-7, 0, 7):
        s = np.full(5000, value, dtype=np.int64)
        assert entropy.predicted_length([(s, model)]) == entropy.code_length(s, model)
    assert entropy.code_length(np.full(5000, -7), model) == 0
    tail = np.concatenate([np.full(50, 3), np.full(5000, -7)])
    assert entropy.predicted_length([(tail, model)]) == entropy.code_length(tail, model)


def test_one_symbol_range_and_empty_cost_nothing_and_round_trip() -> None:
    single = SymbolModel(3, 3)
    s = np.full(100, 3, dtype=np.int64)
    assert entropy.probabilities(single).tolist() == [1 << entropy.PRECISION]
    assert entropy.best_model(s, 3, 3) == single
    assert entropy.code_length(s, single) == entropy.predicted_length([(s, single)]) == 0
    empty, model = np.zeros(0, dtype=np.int64), SymbolModel(-4, 4)
    assert entropy.code_length(empty, model) == entropy.predicted_length([(empty, model)]) == 0
    assert entropy.best_model(empty, -4, 4) == SymbolModel(-4, 4)
    # Between coded tensors, a one-symbol tensor takes no room in the stream and decodes to its value.
    a, b = np.array([1, -2, 0, 2]), np.array([0, 1, 0, 0, 1])
    items = [(a, SymbolModel(-2, 2)), (s, single), (b, SymbolModel(0, 1)), (empty, SymbolModel(-1, 1))]
    data = entropy.encode(items)
    assert data == entropy.encode([items[0], items[2]])
    out = entropy.decode(data, [(len(x), m) for x, m in items])
    for (x, _), y in zip(items, out, strict=True):
        np.testing.assert_array_equal(x, y)


def test_symbols_outside_their_range_are_refused() -> None:
    for bad in ([0, 5], [-5, 0]):
        with pytest.raises(ValueError, match="range"):
            entropy.best_model(np.array(bad), -4, 4)


def test_best_model_codes_as_short_as_trying_every_candidate() -> None:
    """The computed choice against the old way (code with each candidate, keep the shortest): the same
    length, but for a near-tie inside one word."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        q = int(rng.integers(1, 200))
        s = _symbols(rng, "laplace" if trial % 2 else "normal", float(rng.uniform(0.2, q)),
                     int(rng.integers(10, 8000)), -q, q)
        cands = entropy.candidates(entropy.histogram(s, -q, q), -q, q)
        shortest = min(entropy.code_length(s, c) for c in cands)
        assert entropy.code_length(s, entropy.best_model(s, -q, q)) <= shortest + WORD


def test_predicting_swaps_the_stream_for_its_predicted_length() -> None:
    rng = np.random.default_rng(0)
    items = [(_symbols(rng, "normal", 3.0, 4000, -9, 9), SymbolModel(-9, 9, FAMILY_GAUSSIAN, 3.0)),
             (rng.integers(0, 64, 500), SymbolModel(0, 63))]
    with entropy.predicting():
        fake = entropy.encode(items)
    real = entropy.encode(items)
    assert fake == bytes(len(fake)) and len(fake) == len(real)
    assert entropy.encode(items) == real  # the block ended: real coding again


# --- the level search -------------------------------------------------------------------------------


def _plain_bisection(size, budget: int, hi: int) -> int | None:  # noqa: ANN001
    """The search as it was: a bisection on real sizes."""
    if size(1) > budget:
        return None
    if size(hi) <= budget:
        return hi
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _plain_search(fitted: FittedImage, spec: QuantSpec, budget: int, hi: int = 4096) -> int | None:
    return _plain_bisection(lambda q: len(encode_blob(fitted, spec.with_levels(q))), budget, hi)


def test_find_levels_matches_bisection_on_any_growing_size() -> None:
    """Synthetic sizes that grow with Q (like log Q, like Q, in jumps), predictions off by up to two words
    either way, any guess: always the bisection's answer from the real sizes."""
    rng = np.random.default_rng(3)
    shapes = (lambda q: 900 + 700 * np.log2(2 * q + 1), lambda q: 300 + 9 * q, lambda q: 500 + 40 * (q // 7))
    for _ in range(300):
        shape = shapes[int(rng.integers(len(shapes)))]
        hi = int(rng.choice([4, 80, 4096]))
        sizes = np.array([0] + [int(shape(q)) for q in range(1, hi + 1)])
        noise = rng.integers(-2, 3, hi + 1) * WORD

        def real(q: int, sizes: np.ndarray = sizes) -> int:
            return int(sizes[q])

        def predicted(q: int, sizes: np.ndarray = sizes, noise: np.ndarray = noise) -> int:
            return int(sizes[q] + noise[q])

        budget = int(rng.integers(sizes[1] - 50, sizes[hi] + 50))
        guess = None if rng.random() < 0.5 else int(rng.integers(1, hi + 1))
        assert find_levels(real, predicted, budget, hi, guess) == _plain_bisection(real, budget, hi)


@pytest.fixture(scope="module")
def nets(parrots: np.ndarray) -> list[FittedImage]:
    """A short real fit, and two untrained networks of other widths."""
    torch.manual_seed(0)
    out = [fit_image(parrots, default_config(96, 64, 3, 40), FitOptions(steps=60, device="cpu"))]
    for width, seed in ((24, 1), (64, 2)):
        config = default_config(96, 64, 3, width)
        out.append(FittedImage(config, 96, 64, build_model(config, seed=seed).eval(), "rgb", {"psnr": 0.0}))
    for f in out:
        f.meta = {"psnr": 0.0, "steps": 72}
    return out


def test_search_picks_the_plain_bisections_levels_within_budget(nets: list[FittedImage],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_encodes = {"n": 0}
    encode_blob_ = levels.encode_blob

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        real_encodes["n"] += not entropy._PREDICTING.get()
        return encode_blob_(*args, **kwargs)

    monkeypatch.setattr(levels, "encode_blob", counting)
    searches = 0
    for f in nets:
        spec = QuantSpec(6)
        q1 = len(encode_blob(f, spec.with_levels(1)))
        for budget in (q1 - 1, q1, q1 + 37, 2 * q1, 5 * q1, 20 * q1):
            for hi in (4096, 9):
                q = search_levels(f, spec, budget, hi=hi)
                searches += 1
                assert q == _plain_search(f, spec, budget, hi), (f.config.input_width, budget, hi)
                if q is None:
                    assert budget < q1
                else:
                    assert len(encode_blob(f, spec.with_levels(q))) <= budget
    # The point of predicting: a handful of real encodes per search instead of a bisection's ~14.
    assert real_encodes["n"] <= 2 * searches  # measured: 59 for 36 searches
