"""Issue 28, encoding as tiles (rate/tiles.py) with the real encoder on tiny images (the working size lowered):
at or under the working size the blob is today's, byte for byte; above it the tiles are one batch of one plan,
the container stays within the whole image's budget, its PSNR is what decoding gives, progress is the tiles'
mean, cancellation stops it, and the blend shows no seam beyond the tiles' own error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import sample_path
from tuner_model.codec import TiledInfo, decode_blob, read_info
from tuner_model.codec.tiled_blob import overhead
from tuner_model.core.errors import FitCancelled
from tuner_model.core.image_io import load_image
from tuner_model.core.progress import Progress
from tuner_model.core.stop import stop_when
from tuner_model.core.tiling import tile_grid
from tuner_model.models.tiled import TiledImage
from tuner_model.rate import table
from tuner_model.rate import tiles as tiles_mod
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings
from tuner_model.rate.tile_plan import container_reserve, plan_tiles, tile_budgets, total_budget
from tuner_model.rate.tiles import encode_any
from tuner_model.render.fitted import measure_psnr, render_image

W, H = 120, 64
WORKING = (72, 64)  # two tiles of 68 × 64, 16 pixels apart
SETTINGS = EncodeSettings(bpp=2.0, steps=40, device="cpu")


def synthetic(w: int = W, h: int = H) -> np.ndarray:
    """A smooth RGB image (a tiny fit reaches ~27 dB on it)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.3 * np.sin(2 * np.pi * x / 53) * np.cos(2 * np.pi * y / 41)
    g = 0.2 + 0.6 * x / w
    b = 0.5 + 0.25 * np.sin(2 * np.pi * (x + 2 * y) / 67)
    return np.stack([r, g, b], axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def encoded() -> tuple[np.ndarray, TiledImage, bytes, list[Progress], list[int]]:
    image = synthetic()
    reports: list[Progress] = []
    batches: list[int] = []
    real = tiles_mod.iter_encode

    def recording(images, plan, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        batches.append(len(images))
        assert all(im.shape == (plan.height, plan.width, 3) for im in images)
        yield from real(images, plan, *args, **kwargs)

    tiles_mod.iter_encode = recording  # the real encoder, its batch sizes recorded
    try:
        # equal shares: one plan for every tile (tests/library/test_allocate.py has the slopes')
        tiled, blob = encode_any(image, SETTINGS, reports.append, working=WORKING, allocation="equal")
    finally:
        tiles_mod.iter_encode = real
    return image, tiled, blob, reports, batches


def test_at_or_under_the_working_size_the_blob_is_todays_byte_for_byte() -> None:
    image = load_image(sample_path("parrots-96x64.png"))
    settings = EncodeSettings(bpp=1.0, steps=20, device="cpu")
    fitted, blob = encode_any(image, settings)  # the real working size: one tile
    assert blob == encode(image, settings)[1]
    assert blob[4] == 2 and not isinstance(fitted, TiledImage)


def test_above_it_the_tiles_are_one_batch_in_one_container_within_the_budget(encoded) -> None:  # noqa: ANN001
    image, tiled, blob, _, batches = encoded
    assert batches == [2]  # at equal shares, every tile in one batch of one plan
    assert blob[4] == 4 and len(blob) <= math.floor(2.0 * W * H / 8)
    info = read_info(blob)
    assert isinstance(info, TiledInfo) and info.grid == tile_grid(W, H, WORKING) and len(info.tiles) == 2
    assert (info.width, info.height, info.bytes) == (W, H, len(blob))
    decoded = decode_blob(blob)
    assert isinstance(decoded, TiledImage)
    # The header's PSNR is the decoded, blended render's; it is not worse than the tiles' own.
    assert info.meta["psnr"] == pytest.approx(measure_psnr(decoded, image), abs=1e-4)
    assert info.meta["psnr"] >= min(t.meta["psnr"] for t in info.tiles) - 0.5
    assert info.meta["psnr"] > 22
    np.testing.assert_array_equal(render_image(decoded), render_image(tiled))


def test_progress_is_the_mean_of_the_tiles(encoded) -> None:  # noqa: ANN001
    reports = encoded[3]
    steps = [p.step for p in reports]
    assert steps == sorted(set(steps)) and steps[-1] == reports[-1].total
    assert steps[0] <= reports[0].total // 10


def test_no_seam_beyond_the_tiles_own_error(encoded) -> None:  # noqa: ANN001
    image, tiled, *_ = encoded
    out = render_image(tiled)
    lo, hi = tiled.grid.x.windows()[0]
    centres = np.arange(W) + 0.5
    window = (centres > lo) & (centres < hi)
    error = np.abs(out - image).mean(axis=(0, 2))  # per column
    assert error[window].mean() <= 1.25 * error[~window].mean()
    # The step from column to column differs from the original's no more in the blend than elsewhere.
    step_error = np.abs(np.diff(out, axis=1) - np.diff(image, axis=1)).max(axis=(0, 2))
    between = window[1:] & window[:-1]
    assert step_error[between].max() <= 1.5 * step_error[~between].max()


def test_a_cancelled_tiled_encode_stops() -> None:
    with stop_when(lambda: "cancelled"), pytest.raises(FitCancelled):
        encode_any(synthetic(), SETTINGS, working=WORKING)


def test_the_budget_split_leaves_room_for_the_container() -> None:
    grid = tile_grid(4000, 3000)
    for settings in (SETTINGS, EncodeSettings(), EncodeSettings(psnr=32.0), EncodeSettings(bpp=0.05)):
        total = total_budget(settings, 4000, 3000)
        budgets = tile_budgets(total, grid)
        assert len(set(budgets)) == 1 and len(budgets) == grid.count
        # the planning modules' reserve (no codec import) bounds the container's real overhead
        assert overhead(grid, {"psnr": 1.0, "seconds": 1.0}, budgets[0]) <= container_reserve(grid.count)
        assert sum(budgets) + overhead(grid, {"psnr": 1.0, "seconds": 1.0}, budgets[0]) <= total
        plan = plan_tiles(settings, grid, 3)
        assert plan.budget == total and plan.count == grid.count
        assert plan.tile.budget <= budgets[0] and plan.tile.request.psnr is None  # one attempt per tile
        assert (plan.tile.width, plan.tile.height) == (grid.tile_width, grid.tile_height)
    # a quality target: the table's rate for it, over the whole image
    assert total_budget(EncodeSettings(psnr=32.0), 4000, 3000) == math.floor(
        table.bpp_for_psnr(32.0) * 4000 * 3000 / 8)
