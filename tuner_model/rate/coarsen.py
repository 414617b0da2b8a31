"""A quality target's last step: an encode's network quantized again on a coarser grid, when every encode
that reached the target overshot its window (rate/encode.py). No new fit: a search over the levels Q."""

from __future__ import annotations

import copy

import numpy as np

from tuner_model.codec import encode_blob
from tuner_model.codec.quant import QuantSpec, plan, snap
from tuner_model.models.fitted import FittedImage
from tuner_model.render.fitted import measure_psnr


def coarser_levels(image: np.ndarray, fitted: FittedImage, planned_levels: int, psnr_floor: float
                   ) -> tuple[FittedImage, bytes] | None:
    """`fitted` (an encode's result, its weights on the grid of its Q levels; its plan's quantizers planned
    for `planned_levels`) quantized again on
    the coarsest grid of fewer levels that keeps its PSNR at or above `psnr_floor`, and that blob: a smaller
    blob for a quality target the encodes overshot, without another fit. None when no coarser grid does.
    The weights are not fine-tuned at the new Q, so per byte it is worse than a fit at that rate; it is
    better than keeping the larger blob. Each trial is one quantization and one native-size render."""
    q0 = fitted.meta.get("levels")
    if not isinstance(q0, int) or q0 < 2:
        return None
    base = QuantSpec(planned_levels)
    found = None
    lo, hi = 1, q0 - 1
    while lo <= hi:  # PSNR grows with Q: the smallest Q whose PSNR reaches the floor
        q = (lo + hi) // 2
        trial = copy.deepcopy(fitted)
        quantizers = plan(trial.model, base.with_levels(q))
        snap(trial.model, quantizers)
        trial.meta["psnr"] = round(measure_psnr(trial, image), 4)
        if trial.meta["psnr"] >= psnr_floor:
            trial.meta.update(levels=q, coarsened_from=q0)
            found, hi = (trial, quantizers), q - 1
        else:
            lo = q + 1
    if found is None:
        return None
    return found[0], encode_blob(found[0], quantizers=found[1])
