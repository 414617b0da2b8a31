"""`tuner bench speed`'s fitting part on the CPU: the grid path against the dense baseline, and the
encoder's time to the quality of the old way of encoding (fast-fitting issue).

Per image, in one run on one machine:
- the reference: 1000 full-image steps with the encoder's network, optimizer and schedule, then the
  encoder's level search and snap, no QAT (how the encoder fitted before effort levels existed). Run on
  the grid path, which computes the same steps as the dense one (gradients equal, tests/test_train_grid.py);
- the dense fp32 eager step's time (measured here, a few steps), so the reference's dense cost is
  1000 × that: the baseline every ratio is against;
- the encoder at the chosen efforts (QAT and level search included): seconds, PSNR, bytes, and whether it
  reaches the reference's PSNR.

Results go to a JSON file as each image finishes; a run started again with the same file skips what is
done (long CPU runs can be stopped and resumed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REFERENCE_STEPS = 1000


def dense_and_grid_step(image: np.ndarray, width: int, steps: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Seconds per full-image training step (forward, backward) of the dense fp32 eager path and of the grid
    path on the same network, and the largest relative difference of their gradients."""
    from tuner_model.models import build_model
    from tuner_model.rate.plan import default_config
    from tuner_model.train.fit import FitOptions, make_objective

    h, w, c = image.shape
    model = build_model(default_config(w, h, c, width), seed=0).train()
    dev = torch.device("cpu")
    objectives = {path: make_objective(model, [image], FitOptions(path=path), dev, stacked=False)
                  for path in ("dense", "grid")}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    times: dict[str, float] = {}
    for path, objective in objectives.items():
        best = float("inf")
        for i in range(warmup + steps):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            objective.losses(model, dict(model.named_parameters()), 0)
            if i >= warmup:
                best = min(best, time.perf_counter() - t0)
        times[path] = best
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters()}
    rel = max(float((grads["dense"][n] - grads["grid"][n]).norm() / grads["dense"][n].norm().clamp(min=1e-30))
              for n in grads["dense"])
    return {"width": width, "dense_ms": round(times["dense"] * 1000, 1), "grid_ms": round(times["grid"] * 1000, 1),
            "speedup": round(times["dense"] / times["grid"], 2), "grad_max_rel_diff": float(f"{rel:.3g}")}


def reference_encode(image: np.ndarray, bpp: float, steps: int = REFERENCE_STEPS) -> dict[str, Any]:
    """The old encoding: `steps` full-image steps with the encoder's settings, level search, snap, no QAT."""
    from tuner_model.codec import encode_blob
    from tuner_model.codec.quant import QuantSpec, plan, snap
    from tuner_model.models import build_model
    from tuner_model.rate.effort import preset
    from tuner_model.rate.levels import search_levels
    from tuner_model.rate.pipeline import fit_options, unquantized
    from tuner_model.rate.plan import Overrides, resolve
    from tuner_model.rate.request import EncodeRequest
    from tuner_model.render.fitted import measure_psnr
    from tuner_model.train.fit import fit

    h, w, c = image.shape
    p = resolve(EncodeRequest(bpp=bpp), w, h, c, overrides=Overrides(phases=preset(steps=steps)))
    full = replace(p.phase("fit"), row_share=1.0, col_share=1.0)  # full-image steps
    model = build_model(p.model, seed=p.seed)
    t0 = time.perf_counter()
    fit(model, image, replace(fit_options(p, full, "cpu"), progress_every=10**9))
    fitted = unquantized(p, model.cpu())
    float_psnr = measure_psnr(fitted, image)
    q = search_levels(fitted, QuantSpec(p.levels), p.budget)
    if q is None:
        raise RuntimeError("the reference network does not fit the budget")
    quantizers = plan(fitted.model, QuantSpec(p.levels).with_levels(q))
    snap(fitted.model, quantizers)
    psnr = measure_psnr(fitted, image)
    seconds = time.perf_counter() - t0
    blob = encode_blob(fitted, quantizers=quantizers)
    return {"steps": steps, "width": p.model.input_width, "seconds": round(seconds, 3),
            "float_psnr": round(float_psnr, 3), "psnr": round(psnr, 3), "levels": q, "bytes": len(blob)}


def effort_encode(image: np.ndarray, bpp: float, effort: int) -> dict[str, Any]:
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings

    t0 = time.perf_counter()
    fitted, blob = encode(image, EncodeSettings(bpp=bpp, effort=effort, device="cpu"))
    seconds = time.perf_counter() - t0
    h, w = image.shape[:2]
    return {"effort": effort, "seconds": round(seconds, 3), "psnr": fitted.meta["psnr"], "bytes": len(blob),
            "bpp": round(8 * len(blob) / (w * h), 4), "width": fitted.config.input_width,
            "levels": fitted.meta.get("levels"), "retuned": fitted.meta.get("retuned")}


def run_fit_speed(images: list[tuple[str, np.ndarray]], bpp: float, efforts: list[int],
                  results: Path | None, say: Callable[[str], None],
                  reference_steps: int = REFERENCE_STEPS) -> dict[str, Any]:
    """The whole fitting comparison; `results` (JSON) is read first and written after every image."""
    done: dict[str, Any] = {}
    if results is not None and results.exists():
        done = json.loads(results.read_text())
    if done and (done.get("bpp") != bpp or done.get("reference_steps") != reference_steps):
        done = {}  # another comparison: start afresh
    report: dict[str, Any] = {"bpp": bpp, "reference_steps": reference_steps, "efforts": efforts,
                              "images": done.get("images", [])}

    def save() -> None:
        if results is not None:
            from tuner_model.core.files import atomic_write

            atomic_write(results, (json.dumps(report, indent=2) + "\n").encode())

    seen = {entry["image"]: entry for entry in report["images"]}
    for name, image in images:
        entry = seen.get(name)
        if entry is None:
            entry = {"image": name}
            report["images"].append(entry)
        if "dense_ms" not in entry:  # the baseline for this image's ratios, measured next to its encodes
            h, w, c = image.shape
            from tuner_model.rate import table as ratecontrol

            width = ratecontrol.plan_for_bpp(bpp, w, h, c).width
            step = dense_and_grid_step(image, width, steps=2)
            entry.update(width=width, dense_ms=step["dense_ms"], grid_ms=step["grid_ms"],
                         grad_max_rel_diff=step["grad_max_rel_diff"])
            save()
        if "reference" not in entry:
            say(f"{name}: reference ({reference_steps} full-image steps, level search, snap) ...")
            entry["reference"] = reference_encode(image, bpp, reference_steps)
            say(f"{name}: reference {entry['reference']}")
            save()
        dense_total = reference_steps * entry["dense_ms"] / 1000
        entry["dense_seconds_to_reference"] = round(dense_total, 3)
        entry["grid_seconds_to_reference"] = entry["reference"]["seconds"]
        runs = {r["effort"]: r for r in entry.setdefault("encodes", [])}
        for effort in efforts:
            if effort in runs:
                continue
            say(f"{name}: encode at effort {effort} ...")
            r = effort_encode(image, bpp, effort)
            r["fraction_of_dense_reference_time"] = round(r["seconds"] / dense_total, 4)
            r["psnr_minus_reference"] = round(r["psnr"] - entry["reference"]["psnr"], 3)
            say(f"{name}: effort {effort}: {r}")
            entry["encodes"].append(r)
            save()
    save()
    return report
