"""`tuner bench speed`'s rendering part: the fast CPU renderer against direct evaluation (`render.render`) at
768×512, 1920×1080 and 3840×2160, with its fidelity (PSNR against direct evaluation, or against exact
evaluation where the direct render was not timed), and direct evaluation on the GPU when there is one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuner_model.bench.machine import best_time

RENDER_SIZES = ((768, 512), (1920, 1080), (3840, 2160))


@dataclass(frozen=True)
class RenderTiming:
    """What the rendering part times: a blob (or one encoded from the first image with `render_steps`
    steps) rendered at `sizes` with the fast renderer, and at `direct_sizes` directly as well."""

    sizes: tuple[tuple[int, int], ...] | list[tuple[int, int]] = RENDER_SIZES
    direct_sizes: tuple[tuple[int, int], ...] | list[tuple[int, int]] = RENDER_SIZES
    repeats: int = 3
    blob: str | None = None
    render_steps: int = 100
    compile_render: bool = False


def bench_render(first: Path, timing: RenderTiming, dev: torch.device, skipped: list[dict],
                 say: Callable[[str], None]) -> dict[str, Any]:
    from tuner_model import render as fast_render
    from tuner_model.codec import decode_blob
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr
    from tuner_model.models import build_model
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.render.direct import render

    if timing.blob:
        data = Path(timing.blob).read_bytes()
        source = {"blob": str(timing.blob)}
    else:
        image = load_image(first)
        _, data = encode(image, EncodeSettings(steps=timing.render_steps, device=str(dev)))
        source = {"encoded_from": first.name, "steps": timing.render_steps}
    fitted = decode_blob(data)
    model, native, colour = fitted.model, fitted.native, fitted.colour
    source.update(bytes=len(data), bpp=round(8 * len(data) / (native[0] * native[1]), 4),
                  width=fitted.config.input_width, native=f"{native[0]}x{native[1]}", arch=fitted.config.arch)
    compiled = False
    if timing.compile_render:
        compiled = fast_render.warm_up(True)
        if not compiled:
            skipped.append({"what": "compiled render sine", "why": "torch.compile unavailable here"})
    rows = []
    for w, h in timing.sizes:
        row: dict[str, Any] = {"size": f"{w}x{h}", "cpu_threads": torch.get_num_threads()}
        if compiled:
            fast_render.warm_up(False)
        t_fast, fast = best_time(lambda w=w, h=h: fast_render.render_fast(model, native, w, h, colour=colour),
                                  timing.repeats)
        row["cpu_fast_ms"] = round(t_fast * 1000, 1)
        row["path"] = "resampled" if _resamples(model, native, w, h, colour) else "exact"
        if compiled:
            fast_render.warm_up(True)
            t_c, _ = best_time(lambda w=w, h=h: fast_render.render_fast(model, native, w, h, colour=colour),
                                timing.repeats)
            row["cpu_fast_compiled_ms"] = round(t_c * 1000, 1)
        if (w, h) in timing.direct_sizes:
            reps = max(1, min(timing.repeats, 2 if w * h <= 1 << 21 else 1))
            t_direct, ref = best_time(lambda w=w, h=h: render(model, native, w, h, colour=colour), reps)
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
            t_gpu, _ = best_time(lambda w=w, h=h, g=gpu_model: render(g, native, w, h, colour=colour, device=dev),
                                  timing.repeats, dev)
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
