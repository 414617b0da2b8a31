"""`tuner bench speed`: fitting and rendering speed (issue 5).

Every speed-up is a ratio measured side by side in the same run, on the same device:
- fitting: ms per full-image step of the network rate control uses at each width, for a plain fp32 eager
  baseline (TunerNet + MSE + Adam + clamp, nothing else) and for the faster variants (bf16 autocast,
  torch.compile, both: CUDA only; recorded as skipped elsewhere), the PSNR each reaches after the same
  steps, an estimate of seconds per image to the encoder's stopping point, and peak GPU memory;
- batched fitting (`batched.fit_batch`): images per second for K images at once against one at a time;
- rendering: the fast CPU renderer against direct evaluation (`render.render`) at 768×512, 1920×1080 and
  3840×2160, with its fidelity (PSNR against direct evaluation, or against exact evaluation where the
  direct render was not timed), and direct evaluation on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from tuner_cli.bench import RENDER_SIZES
from tuner_cli.bench import sizes as parse_sizes
from tuner_model.core.errors import ConfigError


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from tuner_model.core.files import atomic_write

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"fit", "batch", "render", "reference"}
    if unknown:
        raise ConfigError(f"unknown --skip parts: {', '.join(sorted(unknown))}")
    opts = SpeedOptions(device=args.device, widths=args.widths, steps=args.steps, warmup=args.warmup,
                        limit=args.limit, fit_size=args.fit_size,
                        variants=[v.strip() for v in args.variants.split(",") if v.strip()], batch=args.batch,
                        sizes=args.sizes, direct_sizes=args.direct_sizes, repeats=args.repeats, blob=args.blob,
                        render_steps=args.render_steps, compile_render=args.compile_render,
                        full_encode=args.full_encode, threads=args.threads, skip=skip, bpp=args.bpp,
                        efforts=args.efforts, results=Path(args.results) if args.results else None,
                        reference_steps=args.reference_steps)
    report = run_speed_bench(Path(args.images), opts, log=sys.stderr)
    atomic_write(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(json.dumps(report["summary"], indent=2))
    return 0


# ----------------------------------------------------------------------------------------------- the run

VARIANTS = ("fp32-eager", "grid", "bf16-autocast", "compiled", "bf16-compiled")


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
    sizes = parse_sizes(RENDER_SIZES) if opts.sizes is None else opts.sizes
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
        "machine": _machine(dev),
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
        report["render"] = bench_render(paths[0], opts.blob, sizes, direct_sizes, opts.repeats, opts.render_steps,
                                        dev, opts.compile_render, report["skipped"], say)
    report["summary"] = _summary(report)
    return report


def _machine(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "cpu": _cpu_name()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -------------------------------------------------------------------------------------------------- fitting


def _variant_unavailable(variant: str, dev: torch.device) -> str | None:
    if variant in ("fp32-eager", "grid"):
        return None
    if dev.type != "cuda":
        return ("CUDA only: on the CPU bf16 matmuls and inductor's compile time (tens of seconds per shape) "
                "do not pay for a fit; the service fits on GPUs")
    if "bf16" in variant and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def bench_fit(image: np.ndarray, widths: list[int], variants: list[str], steps: int, warmup: int,
              dev: torch.device, skipped: list[dict], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """ms per full-image step (and PSNR after `steps`) per width and variant; fp32-eager is the baseline."""
    from tuner_model.rate.effort import effort_plan
    from tuner_model.rate.encode import default_config

    h, w, c = image.shape
    plan = effort_plan()
    encoder_steps = round(plan.work(w, h))  # full-image step equivalents of a default-effort encode
    rows = []
    run = ["fp32-eager"] + [v for v in variants if v != "fp32-eager"]
    for width in widths:
        config = default_config(w, h, c, width)
        base_ms = None
        for variant in run:
            why = _variant_unavailable(variant, dev)
            if why is not None:
                if width == widths[0]:
                    skipped.append({"what": f"fit variant {variant}", "why": why})
                continue
            try:
                ms, psnr_db, peak = time_fit_steps(config, image, variant, steps, warmup, dev)
            except Exception as e:  # noqa: BLE001 - a variant that cannot run here is a finding, not a crash
                skipped.append({"what": f"fit variant {variant} at width {width}", "why": f"failed: {e}"[:300]})
                continue
            if variant == "fp32-eager":
                base_ms = ms
            row = {"width": width, "variant": variant, "ms_per_step": round(ms, 3), "psnr": round(psnr_db, 3),
                   "steps": steps, "pixels": w * h,
                   "speedup_vs_fp32_eager": round(base_ms / ms, 3) if base_ms else None,
                   "seconds_to_encoder_stop_estimate": round(ms * encoder_steps / 1000, 2),
                   "encoder_full_step_equivalents": encoder_steps}
            if peak is not None:
                row["peak_gpu_mib"] = round(peak / 2**20, 1)
            rows.append(row)
            say(f"fit width {width} {variant}: {ms:.2f} ms/step, {psnr_db:.2f} dB after {steps} steps")
    return rows


def time_fit_steps(config, image: np.ndarray, variant: str, steps: int, warmup: int,
                   dev: torch.device) -> tuple[float, float, int | None]:
    """(ms per step, PSNR after warmup + steps, peak GPU bytes) of full-batch Adam steps with the clamp.
    `grid` is the same step on the grid path (train/grid.py), the others the network's dense forward."""
    from tuner_model.core.metrics import mse_to_psnr
    from tuner_model.models import build_model
    from tuner_model.train.fit import FitOptions, image_targets, make_objective

    model = build_model(config, seed=0).to(dev).train()
    coords, values = image_targets(image, dev)
    with torch.no_grad():
        model.out.bias.copy_(values.mean(dim=0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if "bf16" in variant:
        forward = _mixed_forward(model, dev)
    if "compiled" in variant:
        forward = torch.compile(forward)
    grid = make_objective(model, [image], FitOptions(path="grid"), dev, stacked=False) if variant == "grid" else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if grid is not None:
            grid.losses(model, dict(model.named_parameters()), 0, None)
        else:
            pred = forward(coords)
            loss = ((pred.float() - values) ** 2).mean()
            loss.backward()
        opt.step()
        model.project()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    ms = (time.perf_counter() - start) * 1000 / steps
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    with torch.no_grad():  # quality of what those steps learned, always measured in fp32
        mse = float(((model.eval()(coords) - values) ** 2).mean())
    return ms, mse_to_psnr(mse), peak


def _mixed_forward(model, dev: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """TUNER with bf16 matrix products where accuracy allows: the input layer stays fp32 (its arguments
    reach hundreds of radians, where bf16 keeps no fractional digits), the hidden and output products run
    in bf16 under autocast, and every sine is taken in fp32."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = model.features(x)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            for i in range(len(model.hidden)):
                wh = model.config.hidden_omega
                z = torch.nn.functional.linear(y, model.effective_weight(i), wh * model.hidden_bias[i])
                y = torch.sin(z.float())
            return model.out(y).float()

    return forward


def bench_full_encode(image: np.ndarray, device: str, say: Callable[[str], None]) -> dict[str, Any]:
    from tuner_model.rate.encode import EncodeSettings, encode

    start = time.perf_counter()
    fitted, blob = encode(image, EncodeSettings(device=device))
    seconds = time.perf_counter() - start
    say(f"full encode: {seconds:.1f} s, {fitted.meta['psnr']} dB, {len(blob)} bytes")
    return {"seconds": round(seconds, 2), "psnr": fitted.meta["psnr"], "bytes": len(blob),
            "width": fitted.config.input_width, "bpp": round(8 * len(blob) / (image.shape[0] * image.shape[1]), 4)}


def bench_batched(images: list[np.ndarray], width: int, steps: int, warmup: int, dev: torch.device,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Images per second fitting K images at once against one after another (same steps)."""
    from tuner_model.rate.encode import default_config
    from tuner_model.train.batched import fit_batch
    from tuner_model.train.fit import FitOptions, fit_image

    h, w, c = images[0].shape
    config = default_config(w, h, c, width)
    total = steps + warmup
    opts = FitOptions(steps=total, device=str(dev), progress_every=total)
    fit_batch(images[:2], config, FitOptions(steps=1, device=str(dev)))  # warm caches and kernels
    _sync(dev)
    t0 = time.perf_counter()
    together = fit_batch(images, config, opts)
    _sync(dev)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [fit_image(im, config, opts) for im in images]
    _sync(dev)
    t_alone = time.perf_counter() - t0
    gap = max(abs(a.meta["psnr"] - b.meta["psnr"]) for a, b in zip(together, alone, strict=True))
    k = len(images)
    say(f"batched K={k} width {width}: {k / t_batch:.3f} img/s vs {k / t_alone:.3f} img/s one at a time")
    return {"k": k, "width": width, "steps": total, "seconds_batched": round(t_batch, 3),
            "seconds_one_at_a_time": round(t_alone, 3), "images_per_s_batched": round(k / t_batch, 4),
            "images_per_s_one_at_a_time": round(k / t_alone, 4), "speedup": round(t_alone / t_batch, 3),
            "max_psnr_gap_db": round(gap, 4)}


# ------------------------------------------------------------------------------------------------ rendering


def _best_time(fn: Callable[[], Any], repeats: int, dev: torch.device | None = None) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        if dev is not None:
            _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        if dev is not None:
            _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_render(first: Path, blob: str | None, sizes: list[tuple[int, int]], direct_sizes: list[tuple[int, int]],
                 repeats: int, render_steps: int, dev: torch.device, compile_render: bool, skipped: list[dict],
                 say: Callable[[str], None]) -> dict[str, Any]:
    from tuner_model import render as fast_render
    from tuner_model.codec import decode_blob
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr
    from tuner_model.models import build_model
    from tuner_model.rate.encode import EncodeSettings, encode
    from tuner_model.render.direct import render

    if blob:
        data = Path(blob).read_bytes()
        source = {"blob": str(blob)}
    else:
        image = load_image(first)
        _, data = encode(image, EncodeSettings(steps=render_steps, device=str(dev)))
        source = {"encoded_from": first.name, "steps": render_steps}
    fitted = decode_blob(data)
    model, native, colour = fitted.model, fitted.native, fitted.colour
    source.update(bytes=len(data), bpp=round(8 * len(data) / (native[0] * native[1]), 4),
                  width=fitted.config.input_width, native=f"{native[0]}x{native[1]}", arch=fitted.config.arch)
    compiled = False
    if compile_render:
        compiled = fast_render.warm_up(True)
        if not compiled:
            skipped.append({"what": "compiled render sine", "why": "torch.compile unavailable here"})
    rows = []
    for w, h in sizes:
        row: dict[str, Any] = {"size": f"{w}x{h}", "cpu_threads": torch.get_num_threads()}
        if compiled:
            fast_render.warm_up(False)
        t_fast, fast = _best_time(lambda w=w, h=h: fast_render.render_fast(model, native, w, h, colour=colour),
                                  repeats)
        row["cpu_fast_ms"] = round(t_fast * 1000, 1)
        row["path"] = "resampled" if _resamples(model, native, w, h, colour) else "exact"
        if compiled:
            fast_render.warm_up(True)
            t_c, _ = _best_time(lambda w=w, h=h: fast_render.render_fast(model, native, w, h, colour=colour),
                                repeats)
            row["cpu_fast_compiled_ms"] = round(t_c * 1000, 1)
        if (w, h) in direct_sizes:
            reps = max(1, min(repeats, 2 if w * h <= 1 << 21 else 1))
            t_direct, ref = _best_time(lambda w=w, h=h: render(model, native, w, h, colour=colour), reps)
            row["cpu_direct_ms"] = round(t_direct * 1000, 1)
            row["cpu_speedup"] = round(t_direct / t_fast, 2)
            row["psnr_vs_direct"] = round(psnr(fast, ref), 2)
        else:
            ref = fast_render.render_fast(model, native, w, h, colour=colour, resample=False)
            row["psnr_vs_exact"] = round(psnr(fast, ref), 2)
        if dev.type == "cuda":
            gpu_model = build_model(fitted.config)
            gpu_model.load_state_dict(model.state_dict())
            gpu_model.to(dev)
            render(gpu_model, native, w, h, colour=colour, device=dev)  # warm-up
            t_gpu, _ = _best_time(lambda w=w, h=h, g=gpu_model: render(g, native, w, h, colour=colour, device=dev),
                                  repeats, dev)
            row["gpu_direct_ms"] = round(t_gpu * 1000, 1)
        rows.append(row)
        say(f"render {w}x{h}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "size"))
    if compiled:
        fast_render.warm_up(False)
    if dev.type != "cuda":
        skipped.append({"what": "GPU render timings", "why": "no CUDA device in this run"})
    return {"source": source, "rows": rows}


def _resamples(model, native: tuple[int, int], w: int, h: int, colour: str) -> bool:
    from tuner_model.core.coords import extent
    from tuner_model.render.resample import eval_spacing, passes_probe
    from tuner_model.render.separable import supports

    if not supports(model):
        return False
    sx, sy = extent(*native)
    hh = eval_spacing(model)
    dense = 2 * sx / w < hh or 2 * sy / h < hh
    return dense and passes_probe(model, native, colour, hh)


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
