"""`tuner bench rd`: rate–distortion of our codec against JPEG, WebP and AVIF (Pillow) (the rate-control
table's refit, `tuner bench rc-fit`, is bench/rcfit.py).

rd: for each image and each target bpp, encode with the real encoder, decode the blob, and measure
PSNR/SSIM of what decoding gives at the bpp actually written; each classical codec is run over a
quality sweep on the same image and its PSNR/SSIM interpolated (linear in log bpp) at our bpp.
Writes a JSON report and a PNG plot with COIN's and Strümpler et al.'s published Kodak points.
"""

from __future__ import annotations

import functools
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from tuner_model.core.classical import encode_at
from tuner_model.core.errors import ConfigError, ImageError
from tuner_model.core.image_io import load_image, to_pil
from tuner_model.core.metrics import psnr, ssim

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Published Kodak points (CODEC_ANCHORS.md): COIN results.json; Strümpler et al. basic 8-bit.
COIN = [(0.0368, 22.41), (0.0736, 23.21), (0.1604, 24.64), (0.3074, 26.41), (0.6109, 28.41), (1.209, 30.64)]
STRUMPLER = [(0.0996, 25.64), (0.1879, 27.15), (0.2994, 28.41), (0.9463, 32.27)]
QUALITIES = (2, 5, 8, 12, 16, 20, 25, 30, 40, 50, 60, 70, 80, 88, 94)


def list_images(directory: Path, limit: int | None = None) -> list[Path]:
    if not directory.is_dir():
        raise ImageError(f"{directory}: not a directory")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"{directory}: no images")
    return paths[:limit] if limit else paths


def load_sized(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    img = load_image(path)
    if size is None:
        return img
    w, h = size
    if img.shape[0] > img.shape[1] and w > h:  # keep portrait images portrait
        w, h = h, w
    pil = to_pil(img).resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.float32) / 255.0


def classical_curve(image: np.ndarray, fmt: str) -> list[tuple[float, float, float]]:
    """(bpp, psnr, ssim) of a Pillow codec over QUALITIES, sorted by bpp."""
    pil = to_pil(image)
    pts = []
    for q in QUALITIES:
        data = encode_at(pil, fmt.lower(), q)
        dec = np.asarray(Image.open(io.BytesIO(data)).convert(pil.mode), dtype=np.float32) / 255.0
        if dec.ndim == 2:
            dec = dec[..., None]
        pts.append((8 * len(data) / (image.shape[0] * image.shape[1]), psnr(dec, image), ssim(dec, image)))
    return sorted(pts)


def interpolate(curve: list[tuple[float, ...]], bpp: float) -> tuple[float | None, ...]:
    """Values at `bpp`, linear in log(bpp) between the nearest points; None outside the curve."""
    xs = [p[0] for p in curve]
    if not curve or bpp < xs[0] or bpp > xs[-1]:
        return tuple(None for _ in curve[0][1:]) if curve else (None, None)
    for a, b in zip(curve[:-1], curve[1:], strict=True):
        if a[0] <= bpp <= b[0]:
            t = 0.0 if b[0] == a[0] else (math.log(bpp) - math.log(a[0])) / (math.log(b[0]) - math.log(a[0]))
            return tuple(x + t * (y - x) for x, y in zip(a[1:], b[1:], strict=True))
    return tuple(curve[-1][1:])


@dataclass(frozen=True)
class RdOptions:
    bpps: tuple[float, ...] | list[float] = (0.25, 0.5, 1.0, 2.0)
    steps: int | None = None  # float-fit steps (None: the effort's)
    device: str = "auto"
    limit: int | None = None  # only the first N images
    size: tuple[int, int] | None = None  # resize to WxH first (None: native)
    effort: int | None = None  # None: the default
    results: Path | None = None  # resumable results file


RdProgress = Callable[[int, int, str, float], None]  # (encodes finished, planned, current one, its share done)


def run_rd(images: Path, opts: RdOptions = RdOptions(), log: TextIO | None = None,
           progress: RdProgress | None = None) -> dict:
    """Our codec at each rate on each image, beside JPEG/WebP/AVIF interpolated at our bytes. With
    `opts.results`, finished encodes are kept there and a later run with the same settings continues after
    them; `progress` hears of every encode step."""
    from tuner_model.bench.machine import cpu_summary
    from tuner_model.bench.resume import load_runs, save_runs
    from tuner_model.codec import decode_blob
    from tuner_model.core.device import resolve_device
    from tuner_model.rate.effort import DEFAULT_EFFORT
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.render.fitted import render_image

    effort = opts.effort or DEFAULT_EFFORT
    steps, device, size, bpps = opts.steps, opts.device, opts.size, list(opts.bpps)
    settings_key = {"steps": steps, "effort": effort, "size": list(size) if size else None, "device": device}
    done = load_runs(opts.results, settings_key, "rows")
    on_cpu = resolve_device(device).type == "cpu"  # rows say which CPU made their seconds
    per_image = []
    paths = list_images(images, opts.limit)
    total = len(paths) * len(bpps)
    finished = sum(f"{path.name}@{bpp}" in done for path in paths for bpp in bpps)
    for path in paths:
        img = load_sized(path, size)
        curves = None  # the classical curves (seconds of AVIF encodes) only for an image with rates to run
        rows = []
        for bpp in bpps:
            key = f"{path.name}@{bpp}"
            if key in done:
                rows.append(done[key])
                continue
            if curves is None:
                curves = {fmt.lower(): classical_curve(img, fmt) for fmt in ("JPEG", "WEBP", "AVIF")}
            t = time.perf_counter()
            tick = None
            if progress is not None:
                label = f"{path.name} {bpp} bpp"
                progress(finished, total, label, 0.0)
                tick = functools.partial(_tick, progress, finished, total, label)
            _, blob = encode(img, EncodeSettings(bpp=bpp, steps=steps, device=device, effort=effort), progress=tick)
            decoded = decode_blob(blob)
            dec = render_image(decoded)
            # info_psnr: what the blob's header says (`tuner info`), beside what decoding it gives
            row = {"target_bpp": bpp, "bpp": 8 * len(blob) / (img.shape[0] * img.shape[1]),
                   "psnr": psnr(dec, img), "info_psnr": decoded.meta.get("psnr"), "ssim": ssim(dec, img),
                   "seconds": time.perf_counter() - t, "cpu": cpu_summary() if on_cpu else None}
            for name, curve in curves.items():
                p, s = interpolate(curve, row["bpp"])
                row[f"{name}_psnr"], row[f"{name}_ssim"] = p, s
            rows.append(row)
            done[key] = row
            finished += 1
            save_runs(opts.results, settings_key, "rows", done)
            if log:
                log.write(f"{path.name} {bpp}: {row['bpp']:.3f} bpp {row['psnr']:.2f} dB "
                          f"(jpeg {_fmt(row['jpeg_psnr'])}, webp {_fmt(row['webp_psnr'])}, "
                          f"avif {_fmt(row['avif_psnr'])}) {row['seconds']:.0f}s\n")
                log.flush()
        per_image.append({"image": path.name, "width": img.shape[1], "height": img.shape[0], "rows": rows})
    mean = mean_rows(per_image, bpps)
    return {"steps": steps, "effort": effort, "size": list(size) if size else None, "images": per_image,
            "mean": mean, "published": {"coin": COIN, "strumpler_basic_8bit": STRUMPLER}}



def _tick(progress: RdProgress, finished: int, total: int, label: str, p) -> None:
    progress(finished, total, label, p.fraction)


def mean_rows(per_image: list[dict], bpps: list[float]) -> list[dict]:
    """Per target rate, the mean of every measured field over the images, and the CPUs that made them."""
    mean = []
    for i, bpp in enumerate(bpps):
        entry: dict = {"target_bpp": bpp}
        for key in per_image[0]["rows"][i]:
            if key == "target_bpp" or key == "cpu":
                continue
            vals = [im["rows"][i].get(key) for im in per_image]  # a row from an older run may lack a field
            # A mean over fewer images than ours would not be comparable with ours: when a codec cannot
            # reach this rate on some image (outside its quality sweep), it has no mean here.
            entry[key] = None if any(v is None for v in vals) else float(np.mean(vals))
        entry["cpus"] = sorted({c for im in per_image if (c := im["rows"][i].get("cpu"))})
        mean.append(entry)
    return mean


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    mean = report["mean"]
    ax.plot([m["bpp"] for m in mean], [m["psnr"] for m in mean], "o-", label="TUNER codec (ours)", lw=2)
    for name in ("jpeg", "webp", "avif"):
        pts = [(m["bpp"], m[f"{name}_psnr"]) for m in mean if m.get(f"{name}_psnr") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", label=f"{name.upper()} (Pillow, same images)")
    ax.plot(*zip(*COIN, strict=True), "x:", label="COIN (Kodak, published)")
    ax.plot(*zip(*STRUMPLER, strict=True), "d:", label="Strümpler et al. 8-bit (Kodak, published)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("RGB PSNR (dB)")
    size = report.get("size")
    work = f"{report['steps']} steps" if report.get("steps") else f"effort {report.get('effort') or 'default'}"
    ax.set_title(f"Rate–distortion ({size_text(size)}, {work}, {len(report.get('images', []))} images)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- blob inspection (rc-fit) --------------------------------------------------------------------


def levels_of(blob: bytes) -> int:
    """Q of the first bounded tensor (the hidden weights) of a blob."""
    from tuner_model.codec.blob import stored_codings
    from tuner_model.codec.quant import KIND_BOUNDED

    for kind, param in stored_codings(blob).values():
        if kind == KIND_BOUNDED:
            return int(param)
    raise ConfigError("the blob stores no bounded tensor")


def size_text(size: tuple[int, int] | list[int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "native size"
