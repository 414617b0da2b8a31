"""Rendering a network on any grid: `render` (direct evaluation, any network, any device) and
`render_fast` (TUNER on the CPU: separable input layer, resampled upscales, optional compiled sines);
`render_image` and `measure_psnr` take a FittedImage (what a blob decodes to)."""

from tuner_model.render.direct import MAX_RENDER_PIXELS, render, render_size
from tuner_model.render.fast import render_fast
from tuner_model.render.fitted import measure_psnr, render_image
from tuner_model.render.sines import compiled_in_use, warm_up, warm_up_in_background

__all__ = ["MAX_RENDER_PIXELS", "compiled_in_use", "measure_psnr", "render", "render_fast", "render_image",
           "render_size", "warm_up", "warm_up_in_background"]
