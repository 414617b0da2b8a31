"""The separable first layer shared by rendering and training (models/separable.py, issue 26): its factors are
the network's first layer, both paths build them from it alike, and one TILE_ELEMENTS sizes both paths' tiles."""

from __future__ import annotations

import pytest
import torch

from tuner_model.core.coords import axis_centres, extent
from tuner_model.core.stop import stop_when
from tuner_model.models import ModelConfig, build_model
from tuner_model.models import separable as shared
from tuner_model.render import separable as render_sep
from tuner_model.train import grid as grid_mod

CONFIGS = [ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4),
           ModelConfig(input_width=30, hidden=(20, 8), bandlimit=40, block_limit=12, freq_seed=3)]


def _grid(lo: float = 0.0, hi: float = 1.0, w: int = 40, h: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    sx, sy = extent(w, h)
    return axis_centres(w, sx, lo, hi).to(torch.float64), axis_centres(h, sy, lo, hi).to(torch.float64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["one-layer", "wide-block"])
def test_the_factors_sum_to_the_first_layer(cfg: ModelConfig) -> None:
    model = build_model(cfg, seed=5)
    xs, ys = _grid(0.1, 0.8)
    coef, e, bias, _ = render_sep.first_layer_factors(model, xs, ys)
    z = torch.einsum("ryn,rx->ynx", coef.double(), e.double())
    if bias is not None:
        z += bias.double()
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        s = model.features(torch.stack((gx.reshape(-1), gy.reshape(-1)), 1).float())
        dense = (s @ model.effective_weight(0).T + cfg.hidden_omega * model.hidden_bias[0])
    torch.testing.assert_close(z.permute(0, 2, 1).reshape(-1, z.shape[1]).float(), dense, rtol=0, atol=2e-4)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["one-layer", "wide-block"])
def test_rendering_and_training_build_the_same_factors(cfg: ModelConfig) -> None:
    model = build_model(cfg, seed=6)
    xs, ys = _grid()
    groups = shared.kx_groups(model.k, cfg.period)
    _, e_render, _, n_cos = render_sep.first_layer_factors(model, xs, ys)
    sep = grid_mod.separable(model.k, cfg.period, xs, ys)
    assert n_cos == groups.count and sep.bounds == groups.bounds and sep.zero_row == groups.zero_group
    assert torch.equal(sep.order, groups.order) and torch.equal(sep.omega_y, groups.omega_y)
    assert torch.equal(e_render, shared.x_factors(groups, xs))
    assert torch.equal(sep.e[: e_render.shape[0]], e_render)  # training's e adds a row of ones only without kx = 0
    ks = torch.tensor([[1, 0], [1, 2], [3, -1], [1, 1]])  # no kx = 0: that row of ones carries the bias
    no_zero = shared.kx_groups(ks, cfg.period)
    assert no_zero.zero_group is None and no_zero.bounds == (0, 3, 4)
    e = shared.x_factors(no_zero, xs, bias_row=True)
    assert e.shape == (5, xs.numel()) and torch.equal(e[-1], torch.ones(xs.numel()))


def test_one_tile_rule_sizes_the_render_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(CONFIGS[0], seed=7)
    xs, ys = _grid(0.1, 0.8)  # not mirror-symmetric: the general path, one checkpoint per tile
    assert shared.tile_rows(0) == shared.TILE_ELEMENTS and shared.tile_rows(shared.TILE_ELEMENTS * 2) == 1
    whole = render_sep.grid_values(model, xs, ys)
    monkeypatch.setattr(shared, "TILE_ELEMENTS", 1)  # one row per tile
    tiles = []
    with stop_when(lambda: tiles.append(1)):
        one_row = render_sep.grid_values(model, xs, ys)
    assert len(tiles) == ys.numel()
    torch.testing.assert_close(one_row, whole, rtol=0, atol=1e-5)
