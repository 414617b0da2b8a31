"""Effort levels: more effort is never less fitting, bad levels are refused, small images train on every
row, the encoder follows the plan (sub-grid steps on a large enough image) and reports progress by work."""

from __future__ import annotations

import numpy as np
import pytest

from tuner_model.core.errors import ConfigError
from tuner_model.rate import effort


def test_more_effort_is_never_less_work() -> None:
    works = [effort.effort_plan(level).work(768, 512) for level in range(effort.EFFORT_MIN, effort.EFFORT_MAX + 1)]
    assert works == sorted(works) and works[0] < works[-1]
    est = [effort.estimate_seconds(768, 512, 264, effort.effort_plan(level)) for level in (1, 4, 9)]
    assert est == sorted(est)
    assert effort.estimate_seconds(1536, 1024, 264, effort.effort_plan()) > est[1]  # and with the image size


@pytest.mark.parametrize("level", [0, 10, 2.5, "4"])
def test_bad_levels_are_refused(level) -> None:
    with pytest.raises(ConfigError, match="effort"):
        effort.effort_plan(level)


def test_steps_override_the_float_fit_and_size_the_fine_tuning() -> None:
    plan = effort.effort_plan(4, steps=300)
    assert plan.steps == 300 and plan.qat_steps == effort.qat_steps_for(300) == 60
    assert plan.row_fraction == effort.effort_plan(4).row_fraction  # the sub-grid share stays the level's


def test_small_images_train_on_every_row_and_column() -> None:
    plan = effort.effort_plan(4)
    assert plan.batch_rows(effort.MIN_BATCH_ROWS) is None and plan.batch_cols(96) is None
    assert plan.batch_rows(512) == 256 and plan.batch_cols(768) == 384
    assert plan.qat_batch_rows(512) is None  # effort 4 fine-tunes on every row


def test_the_encoder_follows_the_plan(monkeypatch) -> None:
    from tuner_model.rate import encode as encoder
    from tuner_model.rate import pipeline
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
                                  progress=lambda p: fracs.append(p.step / p.steps))
    assert len(blob) * 8 <= 1.0 * 160 * 256 and fitted.meta["psnr"] > 15
    assert seen[0] == (128, 128)  # the float fit: half the rows and columns, at least MIN_BATCH_ROWS
    assert seen[1] == (160, 256)  # the fine-tuning: every row and column at effort 1
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    setup = pipeline.rate_setup(image.shape, pipeline.RateOptions(1.0, effort.effort_plan(1, 40), "cpu"))
    # The float fit's share of the progress bar is its share of the work (steps × pixels seen).
    fit_work, qat_work = 40 * 128 * 128, setup.n_qat * 160 * 256
    assert setup.fit_share == pytest.approx(fit_work / (fit_work + qat_work))
