"""The grid training path computes the dense path's loss and gradients (same function, summed in another
order), for every network shape it takes: one or more hidden layers, learned bounds, a 0/1 mask, a subset
of rows, K stacked networks, quantized stand-ins. And decoding a blob loads no training code."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tuner_model.core.errors import FitCancelled
from tuner_model.core.stop import stop_when
from tuner_model.models import ModelConfig, build_model
from tuner_model.models import separable as separable_mod
from tuner_model.models.stacked import BatchedTuner
from tuner_model.train import fused
from tuner_model.train import grid as grid_mod
from tuner_model.train.fit import FitOptions, fit, make_objective

H, W = 20, 28


def _image(seed: int = 0, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:w] / 10.0
    base = np.stack([np.sin(3 * xx + yy), np.cos(2 * yy - xx), np.sin(xx * yy)], axis=-1) * 0.3 + 0.5
    return np.clip(base + 0.05 * rng.standard_normal((H, w, 3)), 0, 1).astype(np.float32)


def _grads(model, objective, params=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    params = dict(model.named_parameters()) if params is None else params
    losses = objective.losses(model, params, 0)
    return losses, {n: p.grad.clone() for n, p in params.items() if p.grad is not None}


def _compare(model, images, mask=None, stacked=False, batch_rows=None) -> None:
    dense = make_objective(model, images, FitOptions(path="dense"), torch.device("cpu"), stacked, mask=mask)
    grid = make_objective(model, images, FitOptions(path="grid", batch_rows=batch_rows), torch.device("cpu"),
                          stacked, mask=mask)
    assert isinstance(grid, grid_mod_objective())
    lg, gg = _grads(model, grid)
    if batch_rows is not None:  # the dense reference sees exactly the rows the grid step drew
        rows, _ = grid.last_sample
        assert rows.numel() == batch_rows
        row_mask = np.zeros((H, W), bool)
        row_mask[rows.numpy()] = True
        dense = make_objective(model, images, FitOptions(path="dense"), torch.device("cpu"), stacked,
                               mask=row_mask)
    ld, gd = _grads(model, dense)
    torch.testing.assert_close(lg, ld, rtol=1e-5, atol=1e-7)
    assert set(gd) == set(gg)
    for name in gd:
        # Relative to the gradient's norm; a near-cancelling sum (the output bias of a fitted network:
        # its residuals sum to ~0) is held to float32 rounding of its terms instead.
        diff = float((gd[name] - gg[name]).norm())
        rel = diff / float(gd[name].norm().clamp(min=1e-12))
        assert rel < 1e-4 or diff < 1e-7, (name, rel, diff)


def grid_mod_objective():
    from tuner_model.train.objective import GridObjective

    return GridObjective


def _trained(cfg: ModelConfig, steps: int = 30):
    """A network some steps into a fit: its weights are no longer the init's (some at their bounds)."""
    model = build_model(cfg, seed=1)
    opts = FitOptions(steps=steps, lr=3e-3, device="cpu", path="dense", progress_every=1000)
    fit(model, _image()[..., :cfg.channels], opts)
    return model.train()


@pytest.mark.parametrize("cfg", [
    ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4),
    ModelConfig(input_width=20, hidden=(16, 12), bandlimit=12, block_limit=4),
    ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4, learn_bounds=True),
    ModelConfig(channels=1, input_width=16, hidden=(16,), bandlimit=10, block_limit=3),
], ids=["one-layer", "two-layers", "learned-bounds", "gray"])
def test_grid_gradients_equal_dense(cfg):
    img = _image() if cfg.channels == 3 else _image()[..., :1]
    _compare(_trained(cfg), [img])


def test_grid_gradients_with_mask_and_row_subsets():
    cfg = ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4)
    model = _trained(cfg)
    mask = np.random.default_rng(3).random((H, W)) > 0.05  # the paper's held-out protocol
    _compare(model, [_image()], mask=mask)
    _compare(model, [_image()], batch_rows=7)


@pytest.mark.parametrize("width", [W, W - 1], ids=["even", "odd"])
def test_grid_gradients_on_random_sub_grids(width):
    """A step on a random sub-grid (rows x columns) equals the dense step on exactly those pixels."""
    cfg = ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4)
    model, img = _trained(cfg), _image(w=width)
    grid = make_objective(model, [img], FitOptions(path="grid", batch_rows=9, batch_cols=12), torch.device("cpu"),
                          False)
    lg, gg = _grads(model, grid)
    rows, cols = grid.last_sample
    assert rows.numel() == 9 and cols.numel() == 12 and len(set(cols.tolist())) == 12
    pixels = np.zeros((H, width), bool)
    pixels[np.ix_(rows.numpy(), cols.numpy())] = True
    dense = make_objective(model, [img], FitOptions(path="dense"), torch.device("cpu"), False, mask=pixels)
    ld, gd = _grads(model, dense)
    torch.testing.assert_close(lg, ld, rtol=1e-5, atol=1e-7)
    for name in gd:
        assert float((gd[name] - gg[name]).norm() / gd[name].norm()) < 1e-4, name


def test_grid_gradients_of_stacked_networks():
    cfg = ModelConfig(input_width=24, hidden=(24, 16), bandlimit=12, block_limit=4)
    nets = [_trained(cfg, steps) for steps in (10, 30)]
    model = BatchedTuner(nets).train()
    _compare(model, [_image(0), _image(1)], stacked=True)


def test_grid_gradients_through_quantizers():
    from tuner_model.codec.quant import QuantSpec, plan

    cfg = ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4)
    model = _trained(cfg)
    qs = plan(model, QuantSpec(8))
    out = {}
    for path in ("dense", "grid"):
        obj = make_objective(model, [_image()], FitOptions(path=path), torch.device("cpu"), False, penalty=False)
        with torch.no_grad():
            fake = {n: (qs[n].fake(p) if n in qs else p).detach().clone().requires_grad_(True)
                    for n, p in model.named_parameters()}
        loss = obj.losses(model, fake, 0)
        out[path] = (loss, {n: t.grad for n, t in fake.items()})
    torch.testing.assert_close(out["grid"][0], out["dense"][0], rtol=1e-5, atol=1e-7)
    for n, g in out["dense"][1].items():
        assert float((g - out["grid"][1][n]).norm() / g.norm()) < 1e-4, n


def test_grid_fit_matches_dense_fit():
    """A whole fit on either path ends at the same network (the paths differ only in float rounding)."""
    cfg = ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4)
    psnr = {}
    for path in ("dense", "grid"):
        model = build_model(cfg, seed=2)
        r = fit(model, _image(), FitOptions(steps=60, lr=3e-3, device="cpu", path=path))
        psnr[path] = -10 * np.log10(r.loss)
    assert abs(psnr["grid"] - psnr["dense"]) < 0.01, psnr


def test_cancel_inside_a_grid_step(monkeypatch):
    """The cancel callback is polled between row tiles, not only between steps."""
    monkeypatch.setattr(separable_mod, "TILE_ELEMENTS", 1)  # one row per tile (the rule training and rendering share)
    monkeypatch.setattr(grid_mod, "CANCEL_EVERY_TILES", 2)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2  # false at the step's start, true inside the first step

    cfg = ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4)
    with pytest.raises(FitCancelled, match="inside step"), stop_when(lambda: "stop" if cancel() else None):
        fit(build_model(cfg), _image(), FitOptions(steps=5, device="cpu"))


def test_decoding_a_blob_loads_no_training_code(tmp_path):
    from tuner_model.codec import encode_blob
    from tuner_model.codec.quant import QuantSpec
    from tuner_model.models.fitted import FittedImage

    cfg = ModelConfig(input_width=16, hidden=(16,), bandlimit=10, block_limit=3)
    blob = encode_blob(FittedImage(cfg, W, H, build_model(cfg), "rgb", {"psnr": 20.0}), QuantSpec(8))
    path = tmp_path / "x.tnr"
    path.write_bytes(blob)
    code = (
        "import sys, pathlib\n"
        "from tuner_model.codec import decode_blob\n"
        "from tuner_model.render.fitted import render_image\n"
        f"f = decode_blob(pathlib.Path({str(path)!r}).read_bytes())\n"
        "render_image(f, width=8)\n"
        "bad = [m for m in sys.modules if m.startswith('tuner_model.train') or m == 'tuner_model.encoder']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path.parent.parent),
                   env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2]),
                        "PATH": "/usr/bin:/bin"})


@pytest.fixture
def fused_backward(monkeypatch):
    """The compiled fused top-layer backward, on for one test (skipped where nothing can compile it); the
    native one-pass kernel, which would take one-layer tiles first, off."""
    if not fused.warm_up(True):
        pytest.skip("torch.compile is not available here")
    monkeypatch.setattr(grid_mod, "NATIVE_TOP", False)
    yield
    fused.warm_up(False)


@pytest.mark.parametrize("cfg", [
    ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4),
    ModelConfig(input_width=20, hidden=(16, 12), bandlimit=12, block_limit=4),
    ModelConfig(channels=1, input_width=16, hidden=(16,), bandlimit=10, block_limit=3),
], ids=["one-layer", "two-layers", "gray"])
def test_fused_backward_gives_the_same_gradients(cfg, fused_backward):
    assert fused.fused_in_use()
    img = _image() if cfg.channels == 3 else _image()[..., :1]
    _compare(_trained(cfg), [img])


@pytest.mark.parametrize("cfg", [
    ModelConfig(input_width=24, hidden=(24,), bandlimit=12, block_limit=4),
    ModelConfig(input_width=30, hidden=(20,), bandlimit=40, block_limit=12, freq_seed=3),
], ids=["small", "wide-block"])
def test_padded_group_products_equal_the_per_group_loop(cfg, monkeypatch):
    """The first layer's coefficients as one padded batched product, and as one product per kx group (the
    form taken when one large group would make the padding costly): same values, same gradients."""
    model = _trained(cfg)
    img = _image()
    results = []
    for limit in (grid_mod.PAD_LIMIT, 0.0):
        monkeypatch.setattr(grid_mod, "PAD_LIMIT", limit)
        grid_mod._group_index.cache_clear()
        objective = make_objective(model, [img], FitOptions(path="grid"), torch.device("cpu"), False)
        results.append(_grads(model, objective))
    grid_mod._group_index.cache_clear()
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l0, l1, rtol=1e-6, atol=1e-8)
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], rtol=1e-5, atol=1e-7)
