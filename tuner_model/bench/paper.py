"""`tuner bench paper`: the TUNER paper's image protocol (TUNER.md §7), for TUNER, SIREN and FFM.

Each image is resized to 512×512 (Pillow bicubic, aspect not kept, as the official code does), 5% of
its pixels are held out with a seeded permutation, and each method trains on the other 95% with
batches of 65,536 shuffled pixels (1000 epochs ≈ 4000 steps). Reported per image and as means:
train PSNR (95%), held-out PSNR (5%), gradient PSNR (full image), seconds. Predictions are not
clamped, as in the paper. Coordinates are our pixel centres, not linspace with endpoints: a
uniform rescale of the domain by 511/512 that changes no method's capacity.

Below 512 (`--size 256x256`) the protocol is a CPU-scale version: the width and TUNER's bandlimit scale
with the side (208 and 42 at 256), the default epochs are CPU_EPOCHS, batches scale with the pixel count
(the same 4 per epoch), and TUNER trains on the grid path (train/grid.py) with the held-out mask, each
step on a random quarter of the rows: about the same pixels per step as the others' random batches, at a
fraction of the cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image

from tuner_model.bench.resume import load_runs, save_runs
from tuner_model.core.device import resolve_device
from tuner_model.core.errors import ConfigError, ImageError
from tuner_model.core.metrics import gradient_psnr, psnr
from tuner_model.models import ModelConfig, build_model
from tuner_model.train.fit import FitOptions, fit, image_targets

SIZE = 512
HOLDOUT = 0.05
BATCH = 65536
SEED = 777
CPU_EPOCHS = 500
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Method:
    name: str
    config: ModelConfig
    lr: float


def paper_methods(width: int, size: int = SIZE) -> list[Method]:
    """The three networks of the comparison, m = n = width (416 for Kodak in the paper). TUNER's bandlimit is
    the official code's height/6 (85 at 512): at another size it scales with the side, so that its
    harmonics stay as far below Nyquist as at 512."""
    bandlimit = max(10, round(85 * size / SIZE))
    return [
        # Final official config: p = 4, bandlimit = height/6 = 85, L = 10, ρ = 0.7, c = (1.0, 0.6), ω_h = 30.
        Method("tuner", ModelConfig(arch="tuner", input_width=width, hidden=(width,), period=4.0, bandlimit=bandlimit,
                                    block_limit=10, low_fraction=0.7, bound_low=1.0, bound_high=0.6,
                                    hidden_omega=30.0, freq_seed=SEED), 5e-4),
        # The SIREN baseline trains its first layer; train_siren.py uses lr 1e-4 for it.
        Method("siren", ModelConfig(arch="siren", input_width=width, hidden=(width,), first_omega=30.0), 1e-4),
        # FFM: width/2 Gaussian frequencies (sin and cos), one ReLU hidden layer.
        Method("ffm", ModelConfig(arch="ffm", input_width=width, hidden=(width,), ffm_sigma=10.0), 5e-4),
    ]


def load_square(path: Path, size: int = SIZE) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot read ({e})") from None


def holdout_mask(n_pixels: int, seed: int = SEED) -> np.ndarray:
    """True for training pixels: a seeded permutation holds out the first 5%."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_pixels, generator=g)
    mask = np.ones(n_pixels, dtype=bool)
    mask[perm[: int(round(HOLDOUT * n_pixels))].numpy()] = False
    return mask


def predict(model: torch.nn.Module, coords: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(coords[i : i + chunk]) for i in range(0, coords.shape[0], chunk)])


def gradient_magnitude(model: torch.nn.Module, coords: torch.Tensor, chunk: int = 1 << 15) -> torch.Tensor:
    """|∇ gray(x)| of the prediction, gray = 0.2126 R + 0.7152 G + 0.0722 B, by autograd."""
    w = torch.tensor([0.2126, 0.7152, 0.0722], device=coords.device)
    out = []
    for i in range(0, coords.shape[0], chunk):
        x = coords[i : i + chunk].clone().requires_grad_(True)
        gray = model(x) @ w
        (g,) = torch.autograd.grad(gray.sum(), x)
        out.append(g.norm(dim=1).detach())
    return torch.cat(out)


def run_one(method: Method, image: np.ndarray, epochs: int, device: torch.device,
            schedule: str = "constant", batches: str = "pixels") -> dict:
    """One method on one image. `batches`: "pixels" (random pixel batches, the paper's) or "rows" (TUNER
    only: a random quarter of the grid's rows each step, with the held-out mask; the grid path)."""
    size = image.shape[0]
    n = size * size
    mask = holdout_mask(n)
    batch = BATCH * n // (SIZE * SIZE)  # the same 4 batches per epoch at any size
    steps_per_epoch = math.ceil(int(mask.sum()) / batch)
    rows = batches == "rows" and method.config.arch == "tuner"
    opts = FitOptions(steps=epochs * steps_per_epoch, lr=method.lr, schedule=schedule,
                      warmup=0 if schedule == "constant" else 50,
                      batch_pixels=None if rows else batch, batch_rows=max(1, size // 4) if rows else None,
                      seed=SEED, device=str(device), progress_every=10**9)
    model = build_model(method.config, seed=SEED)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit(model, image, opts, train_mask=mask.reshape(size, size))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    coords, values = image_targets(image, device)
    pred = predict(model, coords)
    keep = torch.as_tensor(mask, device=device)
    grad = gradient_magnitude(model, coords).reshape(size, size).cpu().numpy()
    return {
        "train_psnr": round(psnr(pred[keep], values[keep]), 3),
        "heldout_psnr": round(psnr(pred[~keep], values[~keep]), 3),
        "grad_psnr": round(gradient_psnr(grad, image), 3),
        "seconds": round(seconds, 2),
        "steps": opts.steps,
        "batches": "rows" if rows else "pixels",
    }


@dataclass(frozen=True)
class PaperOptions:
    epochs: int | None = None  # None: 1000 at 512, CPU_EPOCHS below
    width: int | None = None  # None: 416 at 512, scaled with the side below
    device: str = "auto"
    methods: str = "tuner,siren,ffm"
    limit: int | None = None
    schedule: str = "constant"
    tuner_overrides: dict | None = None
    size: int = SIZE
    batches: str | None = None  # TUNER's batches, "pixels" or "rows"; None: pixels at 512, rows below
    results: Path | None = None  # resumable: finished (image, method) runs are kept here and not run again

    def resolved(self) -> tuple[int, int, str]:
        small = self.size < SIZE
        epochs = self.epochs or (CPU_EPOCHS if small else 1000)
        width = self.width or (max(16, round(416 * self.size / SIZE)) if small else 416)
        batches = self.batches or ("rows" if small else "pixels")
        if batches not in ("pixels", "rows"):
            raise ConfigError("batches must be pixels or rows")
        return epochs, width, batches


def run_paper_bench(images: Path, opts: PaperOptions = PaperOptions(), log: TextIO | None = None) -> dict:
    """The paper's protocol. `schedule` and `tuner_overrides` (ModelConfig fields and/or "lr") exist to
    explore what the protocol leaves open; the defaults are the official final config. `size` below 512
    gives the CPU-scale protocol (module docstring)."""
    epochs, width, batches = opts.resolved()
    methods, limit, schedule, tuner_overrides, size = opts.methods, opts.limit, opts.schedule, opts.tuner_overrides, \
        opts.size
    if not images.is_dir():
        raise ImageError(f"{images}: not a directory")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise ImageError(f"{images}: no images found")
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    table = {m.name: m for m in paper_methods(width, size)}
    if tuner_overrides:
        over = dict(tuner_overrides)
        lr = float(over.pop("lr", table["tuner"].lr))
        cfg = ModelConfig.from_dict({**table["tuner"].config.to_dict(), **over})
        table["tuner"] = Method("tuner", cfg, lr)
    unknown = [m for m in wanted if m not in table]
    if unknown or not wanted:
        raise ConfigError(f"unknown methods {unknown}; choose from {', '.join(table)}")
    dev = resolve_device(opts.device)
    protocol = {"size": size, "holdout": HOLDOUT, "batch": BATCH, "epochs": epochs, "width": width,
                "schedule": schedule, "tuner_batches": batches,
                "seed": SEED, "methods": {n: {"lr": table[n].lr, "model": table[n].config.to_dict()}
                                          for n in wanted}}
    per_image = load_runs(opts.results, protocol, "per_image")
    for path in paths:
        image = load_square(path, size)
        done = per_image.setdefault(path.name, {})
        for name in wanted:
            if name in done:
                continue
            r = run_one(table[name], image, epochs, dev, schedule, batches)
            done[name] = r
            if log:
                log.write(f"{path.name} {name}: {r}\n")
                log.flush()
            save_runs(opts.results, protocol, "per_image", per_image)
    per_image = {p.name: per_image[p.name] for p in paths}
    keys = ("train_psnr", "heldout_psnr", "grad_psnr", "seconds")
    mean = {name: {k: round(float(np.mean([per_image[p][name][k] for p in per_image])), 3) for k in keys}
            for name in wanted}
    return {
        "protocol": protocol,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "images": len(per_image),
        "per_image": per_image,
        "mean": mean,
    }

