"""Where an encode loses its PSNR: the float fit alone, then after quantization and coding (one image, one
rate, the encoder's own setup and steps).

    .venv/bin/python scripts/float_vs_quantized.py /work/shared/data/kodak/kodim23.png 1.0 4
"""

from __future__ import annotations

import sys
import time

from tuner_model.core import colour as colour_mod
from tuner_model.core.image_io import load_image
from tuner_model.rate.effort import effort_plan
from tuner_model.rate.pipeline import RateOptions, _float_fit, _quantize, rate_setup
from tuner_model.render.fitted import measure_psnr


def main(path: str, bpp: str = "1.0", effort: str = "4") -> int:
    img = load_image(path)
    setup = rate_setup(img.shape, RateOptions(float(bpp), effort_plan(int(effort)), "cpu", 0))
    target = colour_mod.forward(img, setup.colour)
    t = time.time()
    fitted, secs = _float_fit(setup, target, setup.net_width, None, None)
    print(f"net width {setup.net_width}, budget {setup.budget} bytes: float fit {time.time() - t:.0f} s, "
          f"float PSNR {measure_psnr(fitted, img):.2f} dB", flush=True)
    t = time.time()
    fitted, blob = _quantize(setup, img, target, fitted, secs, None, None)
    meta = fitted.meta
    print(f"quantized and coded: {len(blob)} bytes, PSNR {meta['psnr']:.2f} dB at Q = {meta.get('levels')} "
          f"(fine-tuned at {meta.get('levels_tuned')}, retuned {meta.get('retuned')}), {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
