"""`tuner bench tiled-render`: issue 28's render-by-tile check. A 512×512 crop render (at native scale, over a
tile corner) of a 3-megapixel (2048×1536) tiled blob against a 512×512 crop render of a one-tile 768×512
blob, timed alternately in the same run; the result is the median of the per-round ratios (done when ≤ 2).

Both blobs are encoded here from one real photo (the first image of the directory: the 768×512 blob from
it as it is, the 2048×1536 one from it upscaled 3× and centre-cropped), at 1 bpp, effort 1, with very few
steps: a render's cost depends on the networks' shapes (the rate-control table's network for each tile's
share of the bytes, the tile grid), not on how well they were fitted, so a short fit times the same render as
a full one."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

CROP = 512  # the crop's side, in pixels, rendered at native scale
LARGE = (2048, 1536)
SMALL = (768, 512)


@dataclass(frozen=True)
class TiledRenderOptions:
    rounds: int = 15  # A/B rounds; each round times one render of each (order alternating)
    warmup: int = 2
    steps: int = 5
    bpp: float = 1.0
    effort: int = 1
    threads: int | None = None
    blob_dir: Path | None = None  # blobs kept here (encoded once, reused: large.tnr, small.tnr) when given


def _load_load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to cover width × height (bicubic), centre-cropped to it."""
    import torch.nn.functional as F

    h, w, _ = image.shape
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    up = F.interpolate(t, size=(nh, nw), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
    top, left = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(up[top : top + height, left : left + width].numpy().astype(np.float32))


def corner_box(grid: Any, side: int = CROP) -> tuple[int, int, int, int]:
    """A side × side box (pixels: left, top, right, bottom) centred on the corner where the blend windows of
    the first tile column seam and the middle tile row seam cross (four tiles meet there)."""
    wx, wy = grid.x.windows(), grid.y.windows()
    cx = sum(wx[0]) / 2 if wx else grid.width / 2
    cy = sum(wy[len(wy) // 2]) / 2 if wy else grid.height / 2
    left = int(min(max(0, round(cx - side / 2)), grid.width - side))
    top = int(min(max(0, round(cy - side / 2)), grid.height - side))
    return left, top, left + side, top + side


def meeting_tiles(grid: Any, box: tuple[int, int, int, int]) -> list[int]:
    """The tiles whose blend support meets the box (those render/tiled.py evaluates for it)."""
    l, t, r, b = box

    def meets(support: tuple[float, float], lo: float, hi: float) -> bool:
        return support[0] < hi and support[1] > lo

    return [k for k in range(grid.count)
            if meets(grid.x.support(k % grid.nx), l, r) and meets(grid.y.support(k // grid.nx), t, b)]


def run_tiled_render_bench(images: Path, opts: TiledRenderOptions = TiledRenderOptions(),
                           say: Callable[[str], None] = print) -> dict[str, Any]:
    from tuner_model.codec import decode_blob, read_info
    from tuner_model.core.coords import Crop
    from tuner_model.core.files import atomic_write
    from tuner_model.core.image_io import load_image
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.rate.tiles import encode_any
    from tuner_model.render.fitted import render_image

    from .machine import describe_machine

    if opts.threads:
        torch.set_num_threads(opts.threads)
    first = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[0]
    photo = load_image(first)
    if photo.shape[0] > photo.shape[1]:  # a portrait photo: its landscape orientation
        photo = np.ascontiguousarray(photo.transpose(1, 0, 2))
    settings = EncodeSettings(bpp=opts.bpp, effort=opts.effort, steps=opts.steps, device="cpu")
    blobs, encode_s = {}, {}
    for name, (w, h) in (("large", LARGE), ("small", SMALL)):
        kept = opts.blob_dir / f"{name}.tnr" if opts.blob_dir else None
        if kept is not None and kept.is_file():
            blobs[name], encode_s[name] = kept.read_bytes(), None
            say(f"reused {kept}: {len(blobs[name])} bytes")
            continue
        t0 = time.perf_counter()
        _, blobs[name] = encode_any(_resized(photo, w, h), settings)
        encode_s[name] = round(time.perf_counter() - t0, 1)
        say(f"encoded {name} {w}x{h}: {len(blobs[name])} bytes in {encode_s[name]} s")
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(kept, blobs[name])
    large, small = decode_blob(blobs["large"]), decode_blob(blobs["small"])
    large_info, small_info = read_info(blobs["large"]), read_info(blobs["small"])
    grid = large.grid
    box = corner_box(grid)
    l, t, r, b = box
    crop_a = Crop(l / grid.width, t / grid.height, r / grid.width, b / grid.height)
    sl = (SMALL[0] - CROP) // 2  # the small blob's crop: its centre 512 × 512
    crop_b = Crop(sl / SMALL[0], 0.0, (sl + CROP) / SMALL[0], 1.0)

    def render_a() -> np.ndarray:
        return render_image(large, CROP, CROP, crop_a)

    def render_b() -> np.ndarray:
        return render_image(small, CROP, CROP, crop_b)

    assert render_a().shape == render_b().shape == (CROP, CROP, 3)
    for _ in range(opts.warmup):
        render_a(), render_b()
    load_before = _load_load()
    rounds = []
    for i in range(opts.rounds):
        times = {}
        for name, fn in ((("a", render_a), ("b", render_b)) if i % 2 == 0 else (("b", render_b), ("a", render_a))):
            t0 = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t0
        rounds.append({"a_ms": round(times["a"] * 1000, 2), "b_ms": round(times["b"] * 1000, 2),
                       "ratio": round(times["a"] / times["b"], 3)})
        say(f"round {i + 1}: A {rounds[-1]['a_ms']} ms, B {rounds[-1]['b_ms']} ms, ratio {rounds[-1]['ratio']}")
    load_after = _load_load()
    ratio = statistics.median(r["ratio"] for r in rounds)
    tiles = meeting_tiles(grid, box)
    return {
        "what": "issue 28 item 5: a 512x512 crop render (native scale, over a tile corner) of a 2048x1536 tiled "
                "blob (A) against a 512x512 crop render of a one-tile 768x512 blob (B), alternated in one run",
        "done_when": "median ratio A/B <= 2",
        "median_ratio": round(ratio, 3),
        "passes": ratio <= 2.0,
        "median_a_ms": round(statistics.median(r["a_ms"] for r in rounds), 2),
        "median_b_ms": round(statistics.median(r["b_ms"] for r in rounds), 2),
        "min_a_ms": min(r["a_ms"] for r in rounds), "min_b_ms": min(r["b_ms"] for r in rounds),
        "rounds": rounds,
        "a": {"size": f"{grid.width}x{grid.height}", "bytes": len(blobs["large"]),
              "grid": f"{grid.nx}x{grid.ny} tiles of {grid.tile_width}x{grid.tile_height}, overlap {grid.overlap}",
              "parameters_per_tile": sorted({ti.parameters for ti in large_info.tiles}),
              "parameters_total": large_info.parameters, "crop_px": list(box), "tiles_evaluated": tiles,
              "parameters_evaluated": sum(large_info.tiles[k].parameters for k in tiles),
              "encode_s": encode_s["large"], "psnr": large.meta.get("psnr")},
        "b": {"size": f"{SMALL[0]}x{SMALL[1]}", "bytes": len(blobs["small"]), "parameters": small_info.parameters,
              "crop_px": [sl, 0, sl + CROP, CROP], "encode_s": encode_s["small"],
              "psnr": small.meta.get("psnr") if hasattr(small, "meta") else None},
        "source": {"image": first.name, "large_from": "the image upscaled 3x (bicubic) and centre-cropped",
                   "bpp": opts.bpp, "effort": opts.effort, "steps": opts.steps,
                   "note": "few steps on purpose: render cost depends on the networks' shapes, not the fit",
                   "blobs_reused": [k for k, v in encode_s.items() if v is None]},
        "machine": {**describe_machine(torch.device("cpu")), "torch_threads": torch.get_num_threads(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


__all__ = ["TiledRenderOptions", "corner_box", "meeting_tiles", "run_tiled_render_bench"]
