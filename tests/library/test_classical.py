"""The classical codecs at a byte budget: the file fits, one quality step more would not, and the PSNR is
that of the decoded file."""

from __future__ import annotations

import numpy as np
import pytest

from tuner_model.core.classical import CODECS, at_most_bytes, decode, encode_at
from tuner_model.core.image_io import to_pil
from tuner_model.core.metrics import psnr


@pytest.mark.parametrize("codec", CODECS)
def test_the_highest_quality_that_fits(parrots: np.ndarray, codec: str) -> None:
    budget = 1500
    found = at_most_bytes(parrots, codec, budget)
    assert found is not None and len(found.data) <= budget
    if found.quality < 100:
        assert len(encode_at(to_pil(parrots), codec, found.quality + 1)) > budget
    assert found.psnr == pytest.approx(psnr(decode(found.data, "RGB"), parrots), abs=1e-3)
    assert at_most_bytes(parrots, codec, 20) is None  # not even a header fits
