"""`encode_batch` shares the float fit and the fine-tuning of images of one shape and must give each image
what `encode` of that image alone gives (same configuration, PSNR up to float rounding, blob within
budget), in every mode the encoder has (a rate, the default, a quality target with its re-encodes, the
shrink-and-refit case), with per-image cancellation that leaves the other images' results unchanged."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tuner_model.codec import QuantSpec, read_info
from tuner_model.codec.quant import plan
from tuner_model.core.errors import ConfigError, FitCancelled
from tuner_model.core.stop import stop_when
from tuner_model.models import ModelConfig, build_model
from tuner_model.rate import encode as encoder
from tuner_model.rate import pipeline
from tuner_model.rate import table as ratecontrol
from tuner_model.rate.encode import encode
from tuner_model.rate.plan import default_config, resolve
from tuner_model.rate.request import EncodeSettings
from tuner_model.train.batched import fit_batch
from tuner_model.train.fit import FitOptions, FitProgress
from tuner_model.train.qat import QatOptions, qat_finetune, qat_finetune_batch


def _plan(image: np.ndarray, settings: EncodeSettings):  # noqa: ANN202
    h, w, c = image.shape
    return resolve(settings, w, h, c, seed=settings.seed)


def encode_batch(images, settings: EncodeSettings, progress=None):  # noqa: ANN001, ANN201
    """The one encoder's batch, from settings as `encode` takes them (the plan of the first image's shape)."""
    return encoder.encode_batch(images, _plan(images[0], settings), progress, settings.device)


def _crops(parrots: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(parrots[r : r + 32, c : c + 48]) for r, c in ((0, 0), (32, 0), (0, 48))]


def _budget(settings: EncodeSettings, image: np.ndarray) -> int:
    h, w = image.shape[:2]
    bpp = settings.bpp or max(2.0, 8 * 160 / (w * h))
    return math.floor(bpp * w * h / 8)


def _assert_same(outcome, alone, budget: int | None) -> None:  # noqa: ANN001
    fitted, blob = alone
    assert outcome.error is None and outcome.fitted is not None and outcome.blob is not None
    assert outcome.fitted.config == fitted.config
    assert abs(outcome.fitted.meta["psnr"] - fitted.meta["psnr"]) < 0.05
    assert read_info(outcome.blob).width == fitted.width
    if budget is not None:
        assert len(outcome.blob) <= budget


@pytest.mark.parametrize("settings", [EncodeSettings(steps=40, device="cpu"),
                                      EncodeSettings(bpp=1.0, steps=40, device="cpu", seed=3)])
def test_batch_matches_encode_alone(parrots: np.ndarray, settings: EncodeSettings) -> None:
    images = _crops(parrots)
    outcomes = encode_batch(images, settings)
    for image, outcome in zip(images, outcomes, strict=True):
        _assert_same(outcome, encode(image, settings), _budget(settings, image))
        assert outcome.batch_size == 3 and outcome.fitted.meta["psnr"] > 14
    # Three images, three different networks: the batch did not mix them up.
    assert len({o.blob for o in outcomes}) == 3


def test_quality_target_matches_encode_alone(parrots: np.ndarray) -> None:
    """A PSNR target: the first encode is batched, re-encodes at a higher rate run per image, as in encode."""
    settings = EncodeSettings(psnr=27, steps=30, device="cpu")
    images = _crops(parrots)
    outcomes = encode_batch(images, settings)
    for image, outcome in zip(images, outcomes, strict=True):
        alone = encode(image, settings)
        _assert_same(outcome, alone, None)
        assert len(outcome.blob) == pytest.approx(len(alone[1]), rel=0.05)
        # A blob from a re-encode was fitted alone; only a first encode's blob comes from the batch.
        assert outcome.batch_size in (1, 3)


def test_shrink_and_refit_matches_encode_alone(parrots: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table that sizes the network too big for the budget: each image is refitted smaller on its own,
    with the same result as encode's own refit."""
    real = ratecontrol.plan_for_bpp

    def too_wide(bpp: float, width: int, height: int, channels: int = 3):  # noqa: ANN202
        p = real(bpp, width, height, channels)
        return ratecontrol.Plan(p.width * 3, p.levels, p.bits_per_param, p.target_bytes, p.depth)

    monkeypatch.setattr(ratecontrol, "plan_for_bpp", too_wide)
    settings = EncodeSettings(bpp=1.2, steps=30, device="cpu")
    images = _crops(parrots)[:2]
    outcomes = encode_batch(images, settings)
    for image, outcome in zip(images, outcomes, strict=True):
        alone = encode(image, settings)
        _assert_same(outcome, alone, _budget(settings, image))
        assert outcome.batch_size == 1  # the blob's network was refitted alone
        assert outcome.fitted.config.input_width < 3 * real(1.2, 48, 32).width


def test_cancelling_one_image_leaves_the_others(parrots: np.ndarray) -> None:
    settings = EncodeSettings(steps=40, device="cpu")
    images = _crops(parrots)
    seen: dict[int, list[FitProgress]] = {0: [], 1: [], 2: []}

    def progress(i: int, p: FitProgress) -> None:
        seen[i].append(p)

    def cancel(i: int) -> bool:  # image 1 is cancelled once it has reported some progress mid-fit
        return i == 1 and len(seen[1]) >= 3

    with stop_when(member=cancel):
        outcomes = encode_batch(images, settings, progress=progress)
    assert outcomes[1].cancelled and outcomes[1].blob is None
    assert len(seen[1]) >= 3 and seen[1][-1].step < 40  # stopped during the shared 40-step fit
    for i in (0, 2):
        _assert_same(outcomes[i], encode(images[i], settings), _budget(settings, images[i]))
        steps = [p.step for p in seen[i]]
        assert steps == sorted(steps) and steps[-1] == seen[i][-1].total  # each image's own bar reaches 100%


def test_cancel_during_the_per_image_stage(parrots: np.ndarray) -> None:
    """Image 0 is cancelled after the shared fit, while its quantization runs."""
    settings = EncodeSettings(steps=40, device="cpu")
    images = _crops(parrots)[:2]
    quantizing = {"on": False}

    def progress(i: int, p: FitProgress) -> None:
        if i == 0 and p.step > 40:  # past the float fit's 40 steps: fine-tuning
            quantizing["on"] = True

    with stop_when(member=lambda i: i == 0 and quantizing["on"]):
        outcomes = encode_batch(images, settings, progress=progress)
    assert quantizing["on"] and outcomes[0].cancelled
    _assert_same(outcomes[1], encode(images[1], settings), _budget(settings, images[1]))


def test_all_cancelled_stops(parrots: np.ndarray) -> None:
    calls = {"n": 0}

    def cancel(i: int) -> bool:
        calls["n"] += 1
        return calls["n"] > 10

    with pytest.raises(FitCancelled), stop_when(member=cancel):
        encode_batch(_crops(parrots), EncodeSettings(steps=2000, device="cpu"))
    assert calls["n"] < 100  # it stopped at once, not after 2000 steps


def test_results_come_as_each_image_is_done(parrots: np.ndarray) -> None:
    order = [i for i, _ in encoder.iter_encode(_crops(parrots)[:2], _plan(_crops(parrots)[0], EncodeSettings(steps=10)),
                                                  device="cpu")]
    assert order == [0, 1]


def test_bad_batches_are_refused(parrots: np.ndarray) -> None:
    a, b = _crops(parrots)[0], parrots[:16, :16]
    with pytest.raises(ConfigError):
        encode_batch([a, b], EncodeSettings(steps=5, device="cpu"))
    assert encoder.encode_batch([], _plan(a, EncodeSettings(steps=5))) == []


# --- batched fine-tuning -----------------------------------------------------------------------------


def _nets_and_quantizers(parrots: np.ndarray, levels: tuple[int, ...] = (3, 5, 9)):  # noqa: ANN202
    """Three float fits of the crops and, per network, its own quantizers at its own Q."""
    images = _crops(parrots)
    fits = fit_batch(images, default_config(48, 32, 3, 24), FitOptions(steps=40, device="cpu"))
    models = [f.model for f in fits]
    return images, models, [plan(m, QuantSpec(q)) for m, q in zip(models, levels, strict=True)]


def _assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.detach(), pb.detach(), atol=1e-5, rtol=1e-4, msg=name)


def test_batched_fine_tuning_matches_each_alone(parrots: np.ndarray) -> None:
    images, models, quantizers = _nets_and_quantizers(parrots)
    alone = [copy.deepcopy(m) for m in models]
    losses_alone = [qat_finetune(m, im, qs, 25) for m, im, qs in zip(alone, images, quantizers, strict=True)]
    seen: list[tuple[int, int]] = []
    # Small chunks: several passes per step, unlike the single pass alone.
    losses = qat_finetune_batch(models, images, quantizers, QatOptions(25, chunk_pixels=2048),
                                progress=lambda k, step, loss: seen.append((k, step)))
    assert losses == pytest.approx(losses_alone, rel=1e-5)
    for m, a in zip(models, alone, strict=True):
        _assert_same_params(m, a)
        assert not m.training
    assert sorted(seen) == [(k, s) for k in range(3) for s in range(1, 26)]
    # Each network was tuned at its own Q: the same weights under another network's quantizers differ.
    assert not torch.equal(quantizers[0]["hidden.0"].fake(models[0].hidden[0]),
                           quantizers[2]["hidden.0"].fake(models[0].hidden[0]))


def test_cancelling_one_network_mid_fine_tuning(parrots: np.ndarray) -> None:
    images, models, quantizers = _nets_and_quantizers(parrots)
    before = copy.deepcopy(models[1])
    alone = [copy.deepcopy(m) for m in models]
    for k in (0, 2):
        qat_finetune(alone[k], images[k], quantizers[k], 20)
    steps = {0: 0, 1: 0, 2: 0}

    def progress(k: int, step: int, loss: float) -> None:
        steps[k] = step

    losses = qat_finetune_batch(models, images, quantizers, 20, progress=progress,
                                member_cancelled=lambda k: k == 1 and steps[1] >= 6)
    assert losses[1] is None and steps[1] == 6 and steps[0] == steps[2] == 20
    _assert_same_params(models[1], before)  # a dropped network is left as it was
    for k in (0, 2):
        _assert_same_params(models[k], alone[k])
    assert qat_finetune_batch(models[:2], images[:2], quantizers[:2], 5, member_cancelled=lambda k: True) == [None] * 2


def test_networks_without_a_batched_form_are_fine_tuned_one_by_one(parrots: np.ndarray) -> None:
    images = _crops(parrots)[:2]
    config = ModelConfig(arch="siren", input_width=8, hidden=(8,))
    models = [build_model(config, seed=s) for s in (1, 2)]
    alone = [copy.deepcopy(m) for m in models]
    quantizers = [plan(m, QuantSpec(4)) for m in models]
    for m, im, qs in zip(alone, images, quantizers, strict=True):
        qat_finetune(m, im, qs, 5)
    losses = qat_finetune_batch(models, images, quantizers, 5, member_cancelled=lambda k: False)
    assert all(loss is not None for loss in losses)
    for m, a in zip(models, alone, strict=True):
        _assert_same_params(m, a)


def test_encode_batch_fine_tunes_as_one_batch(parrots: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    batch_ = pipeline.qat_finetune_batch

    def batch(models, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(len(models))
        return batch_(models, *args, **kwargs)

    monkeypatch.setattr(pipeline, "qat_finetune_batch", batch)
    outcomes = encode_batch(_crops(parrots), EncodeSettings(steps=20, device="cpu"))
    assert calls[0] == 3 and all(n == 1 for n in calls[1:])  # together; later only an image's own retune
    assert all(o.blob is not None and o.batch_size == 3 for o in outcomes)
