"""The `tuner bench ...` subcommands' arguments. Only argparse here: each benchmark's module, and torch
with it, is imported when its command runs, so `tuner --help` and the other commands start quickly."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

RENDER_SIZES = "768x512,1920x1080,3840x2160"


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 192x128, got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise argparse.ArgumentTypeError("size sides must be in 8..8192")
    return w, h


def square(text: str) -> int:
    """A square side: N or NxN."""
    if "x" in text.lower():
        w, h = size(text)
        if w != h:
            raise argparse.ArgumentTypeError(f"the paper's protocol is square: got {text!r}")
        return w
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def effort_level(text: str) -> int:
    from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not EFFORT_MIN <= v <= EFFORT_MAX:
        raise argparse.ArgumentTypeError(f"must be in {EFFORT_MIN}..{EFFORT_MAX}, got {v}")
    return v


def sizes(text: str) -> list[tuple[int, int]]:
    return [size(t) for t in text.split(",") if t.strip()] if text else []


def ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return vals


def bpp_list(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not vals or not all(0.01 <= v <= 64 for v in vals):
        raise argparse.ArgumentTypeError("bpp values must be in [0.01, 64]")
    return vals


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), func)(args)

    return run


def register(bench_sub: argparse._SubParsersAction) -> None:
    """Adds `tuner bench paper`, `rd`, `rc-fit` and `speed`."""
    from tuner_cli.main import _positive_int as positive

    devices = ["auto", "cpu", "cuda"]
    bp = bench_sub.add_parser("paper", help="the TUNER paper's protocol: 512², 5%% held out, TUNER vs SIREN vs FFM")
    bp.add_argument("--images", required=True)
    bp.add_argument("--epochs", type=positive, help="default: 1000 at 512, 500 below (the CPU-scale protocol)")
    bp.add_argument("--width", type=positive, help="m = n, input and hidden neurons (default: 416 at 512, "
                    "scaled with the side below)")
    bp.add_argument("--device", default="auto", choices=devices)
    bp.add_argument("--methods", default="tuner,siren,ffm")
    bp.add_argument("--limit", type=positive, help="only the first N images")
    bp.add_argument("--size", type=square, default=512,
                    help="square size the images are resized to, N or NxN (the paper: 512; below it the "
                    "CPU-scale protocol)")
    bp.add_argument("--batches", choices=["pixels", "rows"],
                    help="TUNER's batches: random pixels (the paper's) or random rows on the grid path "
                    "(default: pixels at 512, rows below)")
    bp.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                    help="learning-rate schedule (the paper: constant)")
    bp.add_argument("--tuner", action="append", metavar="KEY=VALUE",
                    help="override a TUNER setting, e.g. bandlimit=64 or lr=1e-3 (repeatable)")
    bp.add_argument("--json", required=True)
    bp.add_argument("--results", help="resumable results file: a stopped run continues where it was")
    bp.set_defaults(func=_lazy("tuner_cli.main", "cmd_bench_paper"))

    p = bench_sub.add_parser("rd", help="rate–distortion against JPEG, WebP and AVIF, with a plot")
    p.add_argument("--images", required=True)
    p.add_argument("--bpp", type=bpp_list, default=[0.25, 0.5, 1.0, 2.0], help="comma-separated targets")
    p.add_argument("--device", default="auto", choices=devices)
    p.add_argument("--steps", type=positive, help="float-fit steps (default: the effort's)")
    p.add_argument("--effort", type=effort_level, help="encoder effort 1..9 (default: the encoder's)")
    p.add_argument("--limit", type=positive, help="only the first N images")
    p.add_argument("--size", type=size, help="resize images to WxH first (quick CPU runs)")
    p.add_argument("--json", required=True)
    p.add_argument("--plot", help="PNG path (default: the JSON path with .png)")
    p.add_argument("--results", help="resumable results file: a stopped run continues after its finished encodes")
    p.set_defaults(func=_lazy("tuner_model.bench.rd", "cmd_rd"))

    f = bench_sub.add_parser("rc-fit", help="refit the rate-control table by measurement")
    f.add_argument("--images", required=True)
    f.add_argument("--bpp", type=bpp_list, default=[0.25, 0.5, 1.0, 2.0])
    f.add_argument("--device", default="auto", choices=devices)
    f.add_argument("--steps", type=positive, default=1000)
    f.add_argument("--limit", type=positive)
    f.add_argument("--size", type=size)
    f.add_argument("--guesses", type=bpp_list, default=[4.5, 5.5, 6.5, 7.5],
                   help="bits-per-parameter guesses that size the candidate networks")
    f.add_argument("--json", required=True, help="where to write the table (e.g. tuner_model/rate/table.json)")
    f.set_defaults(func=_lazy("tuner_model.bench.rd", "cmd_rc_fit"))

    s = bench_sub.add_parser("speed", help="fitting and rendering speed against a plain fp32 baseline")
    s.add_argument("--images", required=True, help="directory of images (the first --limit are used)")
    s.add_argument("--device", default="auto", choices=devices)
    s.add_argument("--json", required=True, help="where to write the report")
    s.add_argument("--widths", type=ints, help="network widths m = n to time (default: the rate-control table's "
                   "widths at the fit size)")
    s.add_argument("--steps", type=positive, help="timed steps per variant (default 200 on CUDA, 5 on CPU)")
    s.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    s.add_argument("--limit", type=positive, default=4, help="images to use (batched fitting uses them all)")
    s.add_argument("--fit-size", type=size, help="resize images to WxH for fitting (default: native)")
    s.add_argument("--variants", default="fp32-eager,grid,bf16-autocast,compiled,bf16-compiled",
                   help="fitting variants (grid: the separable grid path; bf16: hidden and output products in bf16, "
                   "input layer and sines in fp32; CUDA only); fp32-eager is always run as the baseline")
    s.add_argument("--batch", type=positive, default=4, help="K for batched fitting (--skip batch skips it)")
    s.add_argument("--sizes", type=sizes, default=sizes(RENDER_SIZES), help="render sizes WxH,WxH,...")
    s.add_argument("--direct-sizes", type=sizes, help="sizes at which direct CPU evaluation is timed too "
                   "(default: all; it is slow on a small CPU)")
    s.add_argument("--repeats", type=positive, default=3, help="render timings keep the fastest of these")
    s.add_argument("--blob", help="render this blob (default: encode the first image at the default setting)")
    s.add_argument("--render-steps", type=positive, default=100,
                   help="fit steps for the blob rendered when no --blob is given")
    s.add_argument("--compile-render", action="store_true", help="also time the fast renderer's compiled sine")
    s.add_argument("--full-encode", action="store_true",
                   help="time the real encoder at its default setting on the first image (slow on CPU)")
    s.add_argument("--threads", type=positive, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--skip", default="", help="comma-separated parts to skip: fit,reference,batch,render")
    s.add_argument("--bpp", type=float, default=1.0, help="rate of the reference comparison (CPU)")
    s.add_argument("--efforts", type=ints, help="encoder efforts timed against the reference (default: the default)")
    s.add_argument("--reference-steps", type=positive, default=1000,
                   help="full-image steps of the reference encode (the encoder before effort levels: 1000)")
    s.add_argument("--results", help="resumable results file of the reference comparison (a stopped run "
                   "continues where it was)")
    s.set_defaults(func=_lazy("tuner_model.bench.speed", "cmd_bench_speed"))
