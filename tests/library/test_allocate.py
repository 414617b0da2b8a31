"""Issue 28, item 2: a tiled image's bytes shared by the tiles' rate-distortion slopes (rate/allocate.py).

The allocation is the equal-slope optimum of the probe's power laws (checked against the condition itself
and against equal shares on the models), never over the total, within its bounds; the probe sees a smooth
tile as cheaper than a textured one; a tiled plan takes the budgets and gives each tile a plan within its
own; and the encoder keeps every tile's blob within its budget and the whole within the image's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner_model.codec import decode_blob, read_info
from tuner_model.codec.tiled_blob import read_tiled_info
from tuner_model.core.errors import ConfigError
from tuner_model.core.tiling import tile_grid
from tuner_model.rate.allocate import SHARE_MAX, SHARE_MIN, RateModel, allocate, probe, slope_budgets
from tuner_model.rate.request import EncodeRequest, EncodeSettings
from tuner_model.rate.tile_plan import plan_tiles
from tuner_model.rate.tiles import encode_any


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3)).astype(np.float32)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.3 + 0.4 * x, 0.5 + 0.2 * y, 0.4 + 0.1 * x * y], axis=2).astype(np.float32)


def test_equal_tiles_get_equal_rates_and_the_mean_is_kept() -> None:
    models = [RateModel(0.01, 1.2)] * 4
    assert allocate(models, 0.8) == pytest.approx([0.8] * 4)


def test_the_rates_meet_the_equal_slope_condition_and_beat_equal_rates() -> None:
    models = [RateModel(0.002, 1.0), RateModel(0.01, 1.3), RateModel(0.02, 0.9), RateModel(0.006, 1.6)]
    rates = allocate(models, 1.0)
    assert sum(rates) == pytest.approx(4.0)
    assert all(SHARE_MIN - 1e-9 <= r <= SHARE_MAX + 1e-9 for r in rates)
    free = [(m, r) for m, r in zip(models, rates, strict=True) if SHARE_MIN < r < SHARE_MAX]
    slopes = [m.gamma * m.c * r ** (-m.gamma - 1) for m, r in free]
    assert len(free) >= 2 and max(slopes) == pytest.approx(min(slopes), rel=1e-6)
    total = sum(m.mse(r) for m, r in zip(models, rates, strict=True))
    assert total < sum(m.mse(1.0) for m in models)
    assert rates[2] > rates[0]  # the harder tile gets more


def test_a_model_far_off_is_held_within_the_bounds() -> None:
    # the easy tile would take almost nothing: it is held at half the mean, the other takes the rest
    assert allocate([RateModel(1e-6, 1.0), RateModel(10.0, 1.0)], 1.0) == pytest.approx([SHARE_MIN, 2 - SHARE_MIN])


def test_the_probe_finds_a_smooth_tile_cheaper_than_a_textured_one() -> None:
    smooth, textured = probe(_smooth(64, 96)), probe(_textured(64, 96, 0))
    assert smooth.mse(1.0) < textured.mse(1.0)
    for m in (smooth, textured):
        assert 0.2 <= m.gamma <= 4.0 and m.c > 0


def test_slope_budgets_favour_texture_and_never_exceed_the_payload() -> None:
    tiles = [_smooth(40, 56), _textured(40, 56, 1), _smooth(40, 56), _textured(40, 56, 2)]
    budgets = slope_budgets(tiles, 1203)
    assert sum(budgets) <= 1203 and sum(budgets) >= 1203 - len(tiles)
    assert min(budgets[1], budgets[3]) > max(budgets[0], budgets[2])
    floored = slope_budgets(tiles, 1203, least=250)  # a floor under each tile, taken from the others
    assert min(floored) >= 250 and 1203 - len(tiles) <= sum(floored) <= 1203
    assert min(floored[1], floored[3]) > max(floored[0], floored[2])


def test_a_tiled_plan_takes_budgets_and_each_tile_plans_within_its_own() -> None:
    grid = tile_grid(2048, 1536)
    plan = plan_tiles(EncodeRequest(bpp=1.0, effort=1), grid, 3)
    share = plan.tile.budget
    budgets = [share] * (plan.count - 2) + [share // 2, share + share // 2]
    given = plan.with_budgets(budgets)
    assert given.tile_plan(0) == plan.tile
    low, high = given.tile_plan(plan.count - 2), given.tile_plan(plan.count - 1)
    assert low.budget <= share // 2 and high.budget <= share + share // 2
    assert low.model.input_width <= plan.tile.model.input_width <= high.model.input_width
    with pytest.raises(ConfigError):
        plan.with_budgets([share + 10_000] * plan.count)  # over the payload
    with pytest.raises(ConfigError):
        plan.with_budgets(budgets[:-1])


@pytest.mark.parametrize("allocation", ["slopes", "equal"])
def test_the_encoder_keeps_each_tile_within_its_budget(allocation: str) -> None:
    image = np.concatenate([_smooth(64, 48), _textured(64, 48, 3)], axis=1)  # 96x64: smooth left, noise right
    settings = EncodeSettings(bpp=1.5, steps=20, effort=1, device="cpu")
    tiled, blob = encode_any(image, settings, working=(56, 40), allocation=allocation)  # type: ignore[arg-type]
    info = read_tiled_info(blob)
    assert len(blob) <= math.floor(1.5 * 96 * 64 / 8) and read_info(blob).grid.count == 4
    sizes = [t.bytes for t in info.tiles]
    if allocation == "slopes":  # the noisy right column got more bytes than the smooth left
        assert sizes[1] + sizes[3] > sizes[0] + sizes[2]
    assert decode_blob(blob).grid == tiled.grid
