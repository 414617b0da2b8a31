"""Where an encode loses its PSNR: the float fit alone, then after quantization and coding (one image, one
rate, the encoder's own setup and steps).

    .venv/bin/python scripts/float_vs_quantized.py /work/shared/data/kodak/kodim23.png 1.0 4
"""

from __future__ import annotations

import dataclasses
import sys
import time

from tuner_model.core import colour as colour_mod
from tuner_model.core.image_io import load_image
from tuner_model.rate.pipeline import finish, train_phases
from tuner_model.rate.plan import resolve
from tuner_model.rate.request import EncodeRequest
from tuner_model.render.fitted import measure_psnr


def main(path: str, bpp: str = "1.0", effort: str = "4") -> int:
    img = load_image(path)
    h, w, c = img.shape
    full = resolve(EncodeRequest(bpp=float(bpp), effort=int(effort)), w, h, c)
    setup = dataclasses.replace(full, phases=full.phases[:1])  # the float fit alone first
    target = colour_mod.forward(img, setup.colour)
    t = time.time()
    tuned = train_phases(setup, [target], "cpu", [lambda *_: None])[0]
    print(f"net width {setup.model.input_width}, budget {setup.budget} bytes: float fit {time.time() - t:.0f} s, "
          f"float PSNR {measure_psnr(tuned.fitted, img):.2f} dB", flush=True)
    t = time.time()
    rest = dataclasses.replace(full, phases=full.phases[1:])  # then the level search, fine-tuning and finish
    for phase in rest.phases:
        if phase.kind == "levels":
            from tuner_model.rate.pipeline import first_levels

            tuned.levels = first_levels(rest, tuned.fitted)
        elif phase.kind == "qat":
            from tuner_model.rate.pipeline import _qat

            tunes = [tuned]
            _qat(rest, phase, tunes, [target], "cpu", [lambda *_: None], None)
    fitted, blob = finish(rest, img, target, tuned, "cpu", None)
    meta = fitted.meta
    print(f"quantized and coded: {len(blob)} bytes, PSNR {meta['psnr']:.2f} dB at Q = {meta.get('levels')} "
          f"(fine-tuned at {meta.get('levels_tuned')}, retuned {meta.get('retuned')}), {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
