"""Batched fitting must give what fitting each image alone gives (same seed, steps, schedule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner_model.core.errors import ConfigError, FitCancelled
from tuner_model.models import ModelConfig
from tuner_model.render.fitted import render_image
from tuner_model.train.batched import fit_batch
from tuner_model.train.fit import FitOptions, fit_image
from tuner_model.train.loop import clip_per_network

CFG = ModelConfig(arch="tuner", channels=3, input_width=24, hidden=(24,), bandlimit=16, block_limit=6)


def _crops(parrots: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(parrots[r : r + 16, c : c + 24]) for r, c in ((0, 0), (20, 30), (40, 60))]


@pytest.mark.parametrize("batch_pixels", [None, 100])
def test_batched_fit_matches_separate_fits(parrots, batch_pixels):
    images = _crops(parrots)
    opts = FitOptions(steps=60, lr=5e-3, warmup=5, seed=4, device="cpu", batch_pixels=batch_pixels)
    together = fit_batch(images, CFG, opts)
    alone = [fit_image(im, CFG, opts) for im in images]
    assert len(together) == len(images)
    for t, a in zip(together, alone, strict=True):
        assert t.meta["batch"] == len(images)
        assert abs(t.meta["psnr"] - a.meta["psnr"]) < 0.05
        assert t.meta["psnr"] > 15.0  # it learned something
        for pt, pa in zip(t.model.parameters(), a.model.parameters(), strict=True):
            torch.testing.assert_close(pt, pa, atol=2e-3, rtol=1e-2)
    # Different images give different networks: the batch did not share weights by mistake.
    assert not torch.allclose(together[0].model.out.weight, together[1].model.out.weight)


def test_batched_fit_matches_with_the_optimizer_options(parrots):
    """Betas, per-network gradient clipping and the phase group at 10x lr match fitting alone too (the clip
    is active here: a norm over the whole stack instead of each network's own misses by up to 0.34)."""
    images = _crops(parrots)
    opts = FitOptions(steps=60, lr=5e-3, warmup=5, seed=4, device="cpu", betas=(0.9, 0.99),
                      clip_grad_norm=0.02, phase_lr_mult=10.0)
    for t, a in zip(fit_batch(images, CFG, opts), [fit_image(im, CFG, opts) for im in images], strict=True):
        assert abs(t.meta["psnr"] - a.meta["psnr"]) < 0.05
        for pt, pa in zip(t.model.parameters(), a.model.parameters(), strict=True):
            torch.testing.assert_close(pt, pa, atol=2e-3, rtol=1e-2)


def test_gradient_clip_is_per_network():
    """Each stacked network is clipped by its own gradient norm, as clip_grad_norm_ would clip it alone: a
    network with a small gradient is left alone even when its neighbour's is large."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(3, 5, 4)), torch.nn.Parameter(torch.zeros(3, 7))]
    scales = torch.tensor([1e-3, 1.0, 0.05])  # below, far above, just above the clip
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scales.view(-1, *([1] * (p.dim() - 1)))
    alone = [[p.grad[k].clone().requires_grad_() for p in params] for k in range(3)]
    for k in range(3):
        for t in alone[k]:
            t.grad = t.detach().clone()
        torch.nn.utils.clip_grad_norm_(alone[k], 0.02)
    norms = clip_per_network(params, 0.02)
    assert norms[0] < 0.02 < norms[2] < norms[1]
    for k in range(3):
        for p, t in zip(params, alone[k], strict=True):
            torch.testing.assert_close(p.grad[k], t.grad)
    torch.testing.assert_close(torch.stack([p.grad[1].norm() ** 2 for p in params]).sum().sqrt(), torch.tensor(0.02))


def test_bounds_hold_after_batched_fit(parrots):
    cfg = ModelConfig(**{**CFG.to_dict(), "bound_low": 0.05, "bound_high": 0.03, "hidden": [24, 12]})
    fitted = fit_batch(_crops(parrots)[:2], cfg, FitOptions(steps=20, lr=2e-2, device="cpu"))
    for f in fitted:
        for i in range(len(f.model.hidden)):
            w = f.model.effective_weight(i).detach()
            assert torch.all(w.abs() <= f.model.weight_bound(i) * (1 + 1e-6))
        # The largest entries sit on the bound: the clamp was active, not vacuous.
        assert torch.isclose(f.model.effective_weight(0).abs().max(), torch.tensor(0.05))


def test_gray_and_fallback_architectures(parrots):
    gray = [im.mean(axis=2, keepdims=True) for im in _crops(parrots)[:2]]
    cfg = ModelConfig(**{**CFG.to_dict(), "channels": 1})
    out = fit_batch(gray, cfg, FitOptions(steps=10, device="cpu"))
    assert [f.colour for f in out] == ["gray", "gray"]
    assert render_image(out[0]).shape == (16, 24, 1)
    siren = ModelConfig(arch="siren", channels=3, input_width=16, hidden=(16,))
    out = fit_batch(_crops(parrots)[:2], siren, FitOptions(steps=5, device="cpu"))
    assert len(out) == 2 and all(f.config.arch == "siren" for f in out)


def test_mismatched_images_are_refused(parrots):
    a, b = _crops(parrots)[0], parrots[:10, :10]
    with pytest.raises(ConfigError):
        fit_batch([a, b], CFG, FitOptions(steps=1, device="cpu"))
    assert fit_batch([], CFG) == []


def test_dropping_a_member_leaves_the_others_as_fitted_alone(parrots):
    """One image is cancelled mid-fit: it is dropped (None) and the survivors, whose stacked weights and Adam
    moments were cut down to theirs, end where fitting each alone ends."""
    images = _crops(parrots)
    opts = FitOptions(steps=40, lr=5e-3, warmup=5, seed=2, device="cpu")
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def member_progress(k, p):
        seen[k].append(p.step)

    out = fit_batch(images, CFG, opts, member_cancelled=lambda k: k == 1 and len(seen[1]) >= 2,
                    member_progress=member_progress)
    assert out[1] is None and seen[1][-1] < 40
    assert seen[0][-1] == seen[2][-1] == 40
    for k in (0, 2):
        alone = fit_image(images[k], CFG, opts)
        assert abs(out[k].meta["psnr"] - alone.meta["psnr"]) < 0.05
        for pt, pa in zip(out[k].model.parameters(), alone.model.parameters(), strict=True):
            torch.testing.assert_close(pt, pa, atol=2e-3, rtol=1e-2)


def test_cancelling_every_member_stops_the_fit(parrots):
    calls = []

    def cancelled(k):
        calls.append(k)
        return len(calls) > 6

    with pytest.raises(FitCancelled):
        fit_batch(_crops(parrots), CFG, FitOptions(steps=10_000, device="cpu"), member_cancelled=cancelled)
    assert len(calls) < 20  # within a step or two, not 10,000
    siren = ModelConfig(arch="siren", channels=3, input_width=16, hidden=(16,))
    out = fit_batch(_crops(parrots)[:2], siren, FitOptions(steps=5, device="cpu"), member_cancelled=lambda k: k == 0)
    assert out[0] is None and out[1] is not None  # the one-by-one path keeps the same contract
