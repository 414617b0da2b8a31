"""Effort levels as presets (lists of phases): more effort is never less fitting, bad levels are refused, small
images train on every row, the encoder follows the plan (sub-grid steps on a large enough image) and reports
progress by work; the planned step total, the first rate and the estimate have one definition (the plan)."""

from __future__ import annotations

import numpy as np
import pytest

from tuner_model.core.errors import ConfigError
from tuner_model.rate import effort
from tuner_model.rate.plan import resolve
from tuner_model.rate.request import EncodeRequest


def _plan(level: int = effort.DEFAULT_EFFORT, steps: int | None = None, w: int = 768, h: int = 512):
    return resolve(EncodeRequest(bpp=1.0, effort=level, steps=steps), w, h, 3)


def test_more_effort_is_never_less_work() -> None:
    works = [_plan(level).full_steps() for level in range(effort.EFFORT_MIN, effort.EFFORT_MAX + 1)]
    assert works == sorted(works) and works[0] < works[-1]
    est = [_plan(level).seconds() for level in (1, 4, 9)]
    assert est == sorted(est)
    assert _plan(w=1536, h=1024).seconds() > est[1]  # and with the image size
    # A quality target budgets for a retry.
    psnr = resolve(EncodeRequest(psnr=30), 768, 512, 3)
    assert psnr.seconds() == pytest.approx(2 * psnr.attempt_seconds())


@pytest.mark.parametrize("level", [0, 10, 2.5, "4"])
def test_bad_levels_are_refused(level) -> None:
    with pytest.raises(ConfigError, match="effort"):
        effort.preset(level)


def test_a_preset_is_its_phases_in_order() -> None:
    assert [p.kind for p in effort.preset(4)] == ["fit", "levels", "qat", "finish"]
    fit, _, qat, finish = effort.preset(4)
    assert (fit.steps, qat.steps, finish.steps) == (1400, 60, 30)
    assert fit.lr > qat.lr and fit.row_share == 0.5 and qat.row_share == 1.0


def test_steps_override_the_float_fit_and_size_the_fine_tuning() -> None:
    plan = _plan(4, steps=300)
    assert plan.steps("fit") == 300 and plan.steps("qat") == effort.qat_steps_for(300) == 60
    assert plan.total_steps == 360  # what progress counts to: the training phases' steps
    assert plan.phase("fit").row_share == _plan(4).phase("fit").row_share  # the sub-grid share stays the level's


def test_small_images_train_on_every_row_and_column() -> None:
    small, large = _plan(w=96, h=effort.MIN_BATCH_ROWS), _plan()
    assert small.rows(small.phase("fit")) is None and small.cols(small.phase("fit")) is None
    assert large.rows(large.phase("fit")) == 256 and large.cols(large.phase("fit")) == 384
    assert large.rows(large.phase("qat")) is None  # effort 4 fine-tunes on every row


def test_one_first_rate_for_the_api_and_the_encoder() -> None:
    """The API's admission and the encoder read the same first rate: on a tiny image, the rate floor."""
    tiny = resolve(EncodeRequest(), 8, 8, 3)
    assert tiny.bpp > 2.0 and tiny.budget >= 160
    assert resolve(EncodeRequest(bpp=0.5), 768, 512, 3).bpp == 0.5
    assert resolve(EncodeRequest(), 8, 8, 3).batch_key != resolve(EncodeRequest(), 8, 8, 1).batch_key


def test_the_encoder_follows_the_plan(monkeypatch) -> None:
    from tuner_model.rate import encode as encoder
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.train import objective

    seen = []
    original = objective.GridObjective.__init__

    def spy(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        seen.append((self.rows.batch, self.cols))

    monkeypatch.setattr(objective.GridObjective, "__init__", spy)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:256] / 40.0
    image = np.clip(np.stack([np.sin(xx + yy), np.cos(2 * xx), np.sin(yy * xx)], -1) * 0.3 + 0.5
                    + 0.02 * rng.standard_normal((160, 256, 3)), 0, 1).astype(np.float32)
    fracs = []
    fitted, blob = encoder.encode(image, EncodeSettings(bpp=1.0, effort=1, steps=40, device="cpu"),
                                  progress=lambda p: fracs.append(p.fraction))
    assert len(blob) * 8 <= 1.0 * 160 * 256 and fitted.meta["psnr"] > 15
    assert seen[0] == (128, 128)  # the float fit: half the rows and columns, at least MIN_BATCH_ROWS
    assert seen[1] == (160, 256)  # the fine-tuning: every row and column at effort 1
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    plan = resolve(EncodeRequest(bpp=1.0, effort=1, steps=40), 256, 160, 3)
    # The float fit's share of the progress bar is its share of the work (steps × pixels seen).
    fit_work, qat_work = 40 * 128 * 128, plan.steps("qat") * 160 * 256
    assert plan.progress_at("fit", 40) == pytest.approx(fit_work / (fit_work + qat_work))
