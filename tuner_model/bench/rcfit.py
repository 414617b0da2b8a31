"""`tuner bench rc-fit`: refit the rate-control table (tuner_model/rate/table.json) by measurement.

For each rate, networks sized for a few bits-per-parameter guesses, with each of a few depths (hidden
layers), are encoded with the real encoder at one effort (the level search picks Q for each); the network
with the best mean PSNR over the images wins, and its depth, Q, measured bits per parameter and mean PSNR
become the table's row (a near tie goes to the faster network: `choose`). Resumable: every finished encode is kept in
the results file with the settings it was made with, and a rerun with the same settings continues after it.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from tuner_model.core.errors import ConfigError

# Trials within this many dB of the best mean PSNR count as a tie, which the fastest of them wins: one
# seed's encodes swing by about 0.1 dB, and a deeper network costs seconds on every encode.
TIE_DB = 0.1


@dataclass(frozen=True)
class RcFitOptions:
    bpps: tuple[float, ...] | list[float] = (0.25, 0.5, 1.0, 2.0)
    guesses: tuple[float, ...] | list[float] = (4.5, 5.5, 6.5)  # bits per parameter that size the networks
    depths: tuple[int, ...] | list[int] = (1,)  # hidden layers
    effort: int | None = None  # None: the encoder's default
    steps: int | None = None  # float-fit steps instead of the effort's
    device: str = "auto"
    limit: int | None = None
    size: tuple[int, int] | None = None  # resize first (None: native)
    results: Path | None = None  # resumable results file


def fit_table(images: Path, opts: RcFitOptions = RcFitOptions(), log: TextIO | None = None) -> dict:
    """The table's rows (the best guess per rate) and every trial, per image and averaged."""
    from tuner_model.bench.machine import describe_machine
    from tuner_model.bench.rd import list_images, load_sized, size_text
    from tuner_model.bench.resume import load_runs, save_runs
    from tuner_model.core.device import resolve_device
    from tuner_model.rate.effort import DEFAULT_EFFORT

    effort = opts.effort or DEFAULT_EFFORT
    settings = {"effort": effort, "steps": opts.steps, "size": list(opts.size) if opts.size else None,
                "device": opts.device}
    done = load_runs(opts.results, settings, "encodes")
    paths = list_images(images, opts.limit)
    total = len(paths) * len(opts.bpps) * len(opts.guesses) * len(opts.depths)
    count = 0  # this run's trials so far, finished earlier or now
    rows, trials = [], []
    for bpp in opts.bpps:
        results = []
        for depth, guess in itertools.product(opts.depths, opts.guesses):
            per_image = []
            for path in paths:
                key = f"{path.name}@{bpp}@{guess}" + (f"@d{depth}" if depth > 1 else "")
                count += 1
                if key not in done:
                    done[key] = _trial(load_sized(path, opts.size), bpp, guess, depth, (effort, opts.steps),
                                       opts.device)
                    save_runs(opts.results, settings, "encodes", done)
                    if log:
                        log.write(f"[{count}/{total}] {key}: {done[key]}\n")
                        log.flush()
                if "error" not in done[key]:
                    per_image.append(done[key])
            if not per_image:
                continue
            res = {"bpp": bpp, "guess": guess, "depth": depth, "images": len(per_image),
                   "psnr": float(np.mean([r["psnr"] for r in per_image])),
                   "width": int(round(float(np.median([r["width"] for r in per_image])))),
                   "levels": int(round(float(np.median([r["levels"] for r in per_image])))),
                   "bits_per_param": float(np.mean([r["bits_per_param"] for r in per_image])),
                   "seconds": float(np.mean([r["seconds"] for r in per_image]))}
            results.append(res)
            trials.append(res)
        # Only sizes measured on every image compete: a mean over fewer images is another mean.
        complete = [r for r in results if r["images"] == len(paths)]
        if complete:
            best = choose(complete)
            rows.append({k: round(best[k], 4) if isinstance(best[k], float) else best[k]
                         for k in ("bpp", "depth", "levels", "bits_per_param", "psnr")})
    machine = describe_machine(resolve_device(opts.device))
    work = f"{opts.steps} steps" if opts.steps else f"effort {effort}"
    return {"note": (f"fitted by `tuner bench rc-fit` on {len(paths)} images ({', '.join(p.name for p in paths)}) "
                     f"at {size_text(opts.size)}, {work}, device {opts.device}"),
            "effort": effort, "machine": machine, "rows": rows, "trials": trials}


def choose(trials: list[dict]) -> dict:
    """The trial with the best mean PSNR, or the fastest of those within TIE_DB of it."""
    top = max(r["psnr"] for r in trials)
    return min((r for r in trials if r["psnr"] >= top - TIE_DB), key=lambda r: (r["seconds"], -r["psnr"]))


def _trial(img: np.ndarray, bpp: float, guess: float, depth: int, effort: tuple[int, int | None],
           device: str) -> dict:
    """One encode of `img` at `bpp` by the network of `depth` layers sized for `guess` bits per parameter."""
    from tuner_model.bench.rd import levels_of
    from tuner_model.rate.encode import encode_planned
    from tuner_model.rate.plan import Overrides, resolve
    from tuner_model.rate.request import EncodeRequest
    from tuner_model.rate.table import HEADER_BYTES, tuner_parameters, width_for_params

    h, w, c = img.shape
    budget = math.floor(bpp * w * h / 8)
    width = width_for_params(max(0, budget - HEADER_BYTES) * 8 / guess, c, depth)
    t = time.perf_counter()
    try:
        plan = resolve(EncodeRequest(bpp=bpp, effort=effort[0], steps=effort[1]), w, h, c,
                       overrides=Overrides(net_width=width, depth=depth))
        fitted, blob = encode_planned(img, plan, device=device)
    except ConfigError as e:  # a size that cannot be encoded at this rate: no trial
        return {"error": str(e)}
    n = fitted.config.input_width
    return {"width": n, "depth": depth, "psnr": float(fitted.meta["psnr"]), "levels": levels_of(blob),
            "bytes": len(blob), "bits_per_param": 8 * len(blob) / tuner_parameters(n, c, depth),
            "seconds": round(time.perf_counter() - t, 1)}
