"""`tuner bench speed`: fitting and rendering speed.

Every speed-up is a ratio measured side by side in the same run, on the same device: the fit step of each
variant against a plain fp32 eager baseline (fit_steps.py); batched fitting (`batched.fit_batch`), images
per second for K images at once against one at a time (here); the encoder against 1000 full-image steps
(fitspeed.py); the fast CPU renderer against direct evaluation (render_speed.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from tuner_model.bench.fit_steps import VARIANTS, bench_fit
from tuner_model.bench.machine import describe_machine, sync
from tuner_model.bench.render_speed import RENDER_SIZES, RenderTiming, bench_render
from tuner_model.core.errors import ConfigError

# ----------------------------------------------------------------------------------------------- the run



@dataclass(frozen=True)
class SpeedOptions:
    device: str = "auto"
    widths: list[int] | None = None  # None: the rate-control table's widths at the fit size
    steps: int | None = None  # timed steps per variant (200 on CUDA, 5 on the CPU)
    warmup: int = 3
    limit: int = 4
    fit_size: tuple[int, int] | None = None
    variants: list[str] | None = None
    batch: int = 4
    sizes: list[tuple[int, int]] | None = None
    direct_sizes: list[tuple[int, int]] | None = None
    repeats: int = 3
    blob: str | None = None
    render_steps: int = 100
    compile_render: bool = False
    full_encode: bool = False
    threads: int | None = None
    skip: frozenset[str] | set[str] = frozenset()
    bpp: float = 1.0  # the reference comparison's rate
    efforts: list[int] | None = None  # the encoder's efforts in the reference comparison (default: default)
    results: Path | None = None  # the reference comparison's resumable results file
    reference_steps: int = 1000  # full-image steps of the reference encode


def run_speed_bench(images_dir: Path, opts: SpeedOptions = SpeedOptions(),
                    log: TextIO | None = None) -> dict[str, Any]:
    from tuner_model.core.device import resolve_device

    with _grid_as_the_encoder_runs_it(resolve_device(opts.device).type == "cuda") as fused:
        return _speed_report(images_dir, opts, fused, log)


@contextlib.contextmanager
def _grid_as_the_encoder_runs_it(cuda: bool) -> Iterator[bool]:
    """On a CPU, the grid path with the compiled fused backward when it compiles (as the encoder runs it);
    the process is left as it was."""
    from tuner_model.train import fused

    was = fused.fused_in_use()
    try:
        yield fused.warm_up(not cuda)
    finally:
        fused.warm_up(was)


def _speed_report(images_dir: Path, opts: SpeedOptions, fused: bool, log: TextIO | None) -> dict[str, Any]:
    from tuner_model.bench.rd import list_images, load_sized
    from tuner_model.core.device import resolve_device
    from tuner_model.rate import table as ratecontrol
    from tuner_model.rate.effort import DEFAULT_EFFORT

    skip = opts.skip
    if opts.threads:
        torch.set_num_threads(opts.threads)
    dev = resolve_device(opts.device)
    cuda = dev.type == "cuda"
    steps = opts.steps or (200 if cuda else 5)
    variants = opts.variants or list(VARIANTS)
    bad = set(variants) - set(VARIANTS)
    if bad:
        raise ConfigError(f"unknown variants: {', '.join(sorted(bad))}; choose from {', '.join(VARIANTS)}")
    sizes = list(RENDER_SIZES) if opts.sizes is None else opts.sizes
    direct_sizes = sizes if opts.direct_sizes is None else opts.direct_sizes
    paths = list_images(images_dir, opts.limit)
    images = [load_sized(p, opts.fit_size) for p in paths]
    h, w, c = images[0].shape
    widths = opts.widths or sorted({ratecontrol.plan_for_bpp(r.bpp, w, h, c).width for r in ratecontrol.load_table()})

    def say(msg: str) -> None:
        if log is not None:
            log.write(f"[speed] {msg}\n")
            log.flush()

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(dev),
        "settings": {"device": str(dev), "widths": widths, "steps": steps, "warmup": opts.warmup,
                     "images": [p.name for p in paths], "fit_size": list(images[0].shape[1::-1]),
                     "batch": opts.batch, "render_sizes": [f"{w}x{h}" for w, h in sizes],
                     "grid_fused_backward": fused},
        "skipped": [],
    }
    if "fit" not in skip:
        report["fit"] = bench_fit(images[0], widths, variants, steps, opts.warmup, dev, report["skipped"], say)
        if opts.full_encode:
            report["full_encode"] = bench_full_encode(images[0], str(dev), say)
    if "reference" not in skip:
        if cuda:
            report["skipped"].append({"what": "reference comparison", "why": "CPU only (the encoder's time there)"})
        else:
            from tuner_model.bench.fitspeed import run_fit_speed

            report["reference"] = run_fit_speed([(p.name, im) for p, im in zip(paths, images, strict=True)],
                                                opts.bpp, opts.efforts or [DEFAULT_EFFORT], opts.results, say,
                                                opts.reference_steps)
    if "batch" not in skip and opts.batch > 1:
        group = [im for im in images if im.shape == images[0].shape][: opts.batch]
        if len(group) < 2:
            report["skipped"].append({"what": "batched fitting", "why": "fewer than 2 images of one size"})
        else:
            report["batched"] = bench_batched(group, widths[len(widths) // 2], steps, opts.warmup, dev, say)
    if "render" not in skip:
        timing = RenderTiming(sizes, direct_sizes, opts.repeats, opts.blob, opts.render_steps, opts.compile_render)
        report["render"] = bench_render(paths[0], timing, dev, report["skipped"], say)
    report["summary"] = _summary(report)
    return report


def bench_full_encode(image: np.ndarray, device: str, say: Callable[[str], None]) -> dict[str, Any]:
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings

    start = time.perf_counter()
    fitted, blob = encode(image, EncodeSettings(device=device))
    seconds = time.perf_counter() - start
    say(f"full encode: {seconds:.1f} s, {fitted.meta['psnr']} dB, {len(blob)} bytes")
    return {"seconds": round(seconds, 2), "psnr": fitted.meta["psnr"], "bytes": len(blob),
            "width": fitted.config.input_width, "bpp": round(8 * len(blob) / (image.shape[0] * image.shape[1]), 4)}


def bench_batched(images: list[np.ndarray], width: int, steps: int, warmup: int, dev: torch.device,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Images per second fitting K images at once against one after another (same steps)."""
    from tuner_model.rate.plan import default_config
    from tuner_model.train.batched import fit_batch
    from tuner_model.train.fit import FitOptions, fit_image

    h, w, c = images[0].shape
    config = default_config(w, h, c, width)
    total = steps + warmup
    opts = FitOptions(steps=total, device=str(dev), progress_every=total)
    fit_batch(images[:2], config, FitOptions(steps=1, device=str(dev)))  # warm caches and kernels
    sync(dev)
    t0 = time.perf_counter()
    together = fit_batch(images, config, opts)
    sync(dev)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [fit_image(im, config, opts) for im in images]
    sync(dev)
    t_alone = time.perf_counter() - t0
    gap = max(abs(a.meta["psnr"] - b.meta["psnr"]) for a, b in zip(together, alone, strict=True))
    k = len(images)
    say(f"batched K={k} width {width}: {k / t_batch:.3f} img/s vs {k / t_alone:.3f} img/s one at a time")
    return {"k": k, "width": width, "steps": total, "seconds_batched": round(t_batch, 3),
            "seconds_one_at_a_time": round(t_alone, 3), "images_per_s_batched": round(k / t_batch, 4),
            "images_per_s_one_at_a_time": round(k / t_alone, 4), "speedup": round(t_alone / t_batch, 3),
            "max_psnr_gap_db": round(gap, 4)}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"device": report["settings"]["device"]}
    if "fit" in report:
        out["fit_ms_per_step"] = {f"{r['width']}/{r['variant']}": r["ms_per_step"] for r in report["fit"]}
    if "reference" in report:
        out["reference"] = [{"image": e["image"], "reference_psnr": e["reference"]["psnr"],
                             "dense_seconds_to_reference": e["dense_seconds_to_reference"],
                             "grid_seconds_to_reference": e["grid_seconds_to_reference"],
                             "encodes": [{k: r[k] for k in ("effort", "seconds", "psnr", "psnr_minus_reference",
                                                            "fraction_of_dense_reference_time")}
                                         for r in e.get("encodes", [])]}
                            for e in report["reference"]["images"]]
    if "batched" in report:
        out["batched_speedup"] = report["batched"]["speedup"]
    if "render" in report:
        out["render"] = {r["size"]: {k: v for k, v in r.items() if k.endswith("_ms") or k.startswith("psnr")}
                         for r in report["render"]["rows"]}
    out["skipped"] = [s["what"] for s in report["skipped"]]
    return out
