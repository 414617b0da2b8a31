"""Which network and fitting setup buys the most float PSNR for the same parameter count at native scale:
float fits (no quantization) of variants of the encoder's 1-bpp network, on a few images, paired against the
encoder's own setup. Resumable: finished fits are kept in the results file and skipped on a rerun.

    .venv/bin/python scripts/fit_sweep.py --images /work/shared/data/kodak --names kodim05,kodim23 \
        --steps 700 --results docs/results/fit-sweep.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from tuner_model.core.image_io import load_image
from tuner_model.models import build_model
from tuner_model.models.fitted import FittedImage
from tuner_model.rate.pipeline import fit_options
from tuner_model.rate.plan import resolve
from tuner_model.rate.request import EncodeRequest
from tuner_model.render.fitted import measure_psnr
from tuner_model.train.fit import fit

# name: (model config overrides, fit option overrides). Widths keep the parameter count near the base's.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "lr1e-3": ({}, {"lr": 1e-3}),
    "lr4e-3": ({}, {"lr": 4e-3}),
    "block6": ({"block_limit": 6}, {}),
    "block16": ({"block_limit": 16}, {}),
    "band/3": ({"bandlimit": "x2"}, {}),
    "band/12": ({"bandlimit": "x0.5"}, {}),
    "bounds1.0": ({"bound_high": 1.0}, {}),
    "bounds2x": ({"bound_low": 2.0, "bound_high": 1.2}, {}),
    "bounds0.5x": ({"bound_low": 0.5, "bound_high": 0.3}, {}),
    "low0.5": ({"low_fraction": 0.5}, {}),
    "low0.9": ({"low_fraction": 0.9}, {}),
    "deep2": ({"input_width": "d2", "hidden": "d2"}, {}),
    "block10": ({"block_limit": 10}, {}),
    "block12": ({"block_limit": 12}, {}),
    "block24": ({"block_limit": 24}, {}),
    "block32": ({"block_limit": 32}, {}),
    "block48": ({"block_limit": 48}, {}),
    "block24-low0.5": ({"block_limit": 24, "low_fraction": 0.5}, {}),
    "block24-low0.9": ({"block_limit": 24, "low_fraction": 0.9}, {}),
    "block24-bounds2x": ({"block_limit": 24, "bound_low": 2.0, "bound_high": 1.2}, {}),
    "block24-band/12": ({"block_limit": 24, "bandlimit": "x0.5"}, {}),
    "m1.5n": ({"input_width": "m15", "hidden": "m15"}, {}),
    "deep3": ({"input_width": "d3", "hidden": "d3"}, {}),
}


def variant_config(base, over: dict):
    m = base.input_width
    changes = {}
    for key, value in over.items():
        if key == "bandlimit":
            changes[key] = max(10, int(round(base.bandlimit * float(value[1:]))))
        elif value == "d2":  # two hidden layers, m = n1 = n2, about the base's parameters
            w = int((m * m / 2) ** 0.5)
            changes.update(input_width=w, hidden=(w, w))
        elif value == "d3":  # three hidden layers, m = n1 = n2 = n3, about the base's parameters
            w = int((m * m / 3) ** 0.5)
            changes.update(input_width=w, hidden=(w, w, w))
        elif value == "m15":  # more input frequencies than hidden neurons: m = 1.5 n, same m·n
            n = int((m * m / 1.5) ** 0.5)
            changes.update(input_width=int(1.5 * n), hidden=(n,))
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--names", default="kodim05,kodim23")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--bpp", type=float, default=1.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--results", required=True)
    a = ap.parse_args()
    path = Path(a.results)
    done = json.loads(path.read_text()) if path.exists() else []
    seen = {(r["image"], r["variant"], r["steps"], r["bpp"]) for r in done}
    for variant in a.variants.split(","):
        over_cfg, over_fit = VARIANTS[variant]
        for name in a.names.split(","):
            if (name, variant, a.steps, a.bpp) in seen:
                continue
            img = load_image(str(Path(a.images) / f"{name}.png"))
            setup = resolve(EncodeRequest(bpp=a.bpp, effort=4, steps=a.steps), img.shape[1], img.shape[0], img.shape[2])
            config = variant_config(setup.model, over_cfg)
            options = dataclasses.replace(fit_options(setup, setup.phase("fit"), "cpu"), **over_fit)
            model = build_model(config, seed=0)
            params = sum(p.numel() for p in model.parameters())
            t = time.time()
            result = fit(model, img, options)
            fitted = FittedImage(config, setup.width, setup.height, result.model.cpu(), "rgb", {})
            row = {"image": name, "variant": variant, "steps": a.steps, "bpp": a.bpp, "params": params,
                   "input_width": config.input_width, "hidden": list(config.hidden),
                   "psnr": round(measure_psnr(fitted, img), 3), "seconds": round(time.time() - t, 1)}
            done.append(row)
            path.write_text(json.dumps(done, indent=1))
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
