"""`tuner bench paper|rd|cancel|rc-fit|speed|tiled-render`: their arguments and what each command runs. Each benchmark's
module, and torch with it, is imported when its command runs, so `tuner --help` and the other commands
start quickly."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tuner_cli.args import bpp_list, effort_level, ints, positive_int, seconds_list, size, sizes, square
from tuner_model.core.errors import ConfigError, TunerError
from tuner_model.core.files import atomic_write


def register(bench_sub: argparse._SubParsersAction) -> None:
    """Adds `tuner bench paper`, `rd`, `cancel`, `rc-fit`, `speed` and `tiled-render`."""
    devices = ["auto", "cpu", "cuda"]
    bp = bench_sub.add_parser("paper", help="the TUNER paper's protocol: 512², 5%% held out, TUNER vs SIREN vs FFM")
    bp.add_argument("--images", required=True)
    bp.add_argument("--epochs", type=positive_int, help="default: 1000 at 512, 500 below (the CPU-scale protocol)")
    bp.add_argument("--width", type=positive_int, help="m = n, input and hidden neurons (default: 416 at 512, "
                    "scaled with the side below)")
    bp.add_argument("--device", default="auto", choices=devices)
    bp.add_argument("--methods", default="tuner,siren,ffm")
    bp.add_argument("--limit", type=positive_int, help="only the first N images")
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
    bp.set_defaults(func=cmd_bench_paper)

    p = bench_sub.add_parser("rd", help="rate–distortion against JPEG, WebP and AVIF, with a plot")
    p.add_argument("--images", required=True)
    p.add_argument("--bpp", type=bpp_list, default=[0.25, 0.5, 1.0, 2.0], help="comma-separated targets")
    p.add_argument("--device", default="auto", choices=devices)
    p.add_argument("--steps", type=positive_int, help="float-fit steps (default: the effort's)")
    p.add_argument("--effort", type=effort_level, help="encoder effort 1..9 (default: the encoder's)")
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    p.add_argument("--size", type=size, help="resize images to WxH first (quick CPU runs)")
    p.add_argument("--json", required=True)
    p.add_argument("--plot", help="PNG path (default: the JSON path with .png)")
    p.add_argument("--results", help="resumable results file: a stopped run continues after its finished encodes")
    p.set_defaults(func=cmd_rd)

    c = bench_sub.add_parser("cancel", help="how soon a cancelled encode of a large image stops; peak memory")
    c.add_argument("--size", type=size, default=(4440, 2960), help="WxH of the synthetic photo")
    c.add_argument("--bpp", type=float, default=0.25)
    c.add_argument("--effort", type=effort_level, default=1)
    c.add_argument("--after", type=seconds_list, default=[10.0, 60.0, 180.0],
                   help="comma-separated seconds into the encode at which to cancel (one encode each)")
    c.add_argument("--device", default="cpu", choices=devices)
    c.add_argument("--json", required=True)
    c.set_defaults(func=cmd_bench_cancel)

    f = bench_sub.add_parser("rc-fit", help="refit the rate-control table by measurement")
    f.add_argument("--images", required=True)
    f.add_argument("--bpp", type=bpp_list, default=[0.25, 0.5, 1.0, 2.0])
    f.add_argument("--device", default="auto", choices=devices)
    f.add_argument("--effort", type=effort_level, help="encoder effort 1..9 (default: the encoder's)")
    f.add_argument("--steps", type=positive_int, help="float-fit steps (default: the effort's)")
    f.add_argument("--limit", type=positive_int)
    f.add_argument("--size", type=size, help="resize images to WxH first (default: native)")
    f.add_argument("--guesses", type=bpp_list, default=[4.5, 5.5, 6.5],
                   help="bits-per-parameter guesses that size the candidate networks")
    f.add_argument("--depths", type=ints, default=[1], help="comma-separated hidden-layer counts to try")
    f.add_argument("--json", required=True, help="where to write the table (e.g. tuner_model/rate/table.json)")
    f.add_argument("--results", help="resumable results file: a stopped run continues after its finished encodes")
    f.set_defaults(func=cmd_rc_fit)

    s = bench_sub.add_parser("speed", help="fitting and rendering speed against a plain fp32 baseline")
    s.add_argument("--images", required=True, help="directory of images (the first --limit are used)")
    s.add_argument("--device", default="auto", choices=devices)
    s.add_argument("--json", required=True, help="where to write the report")
    s.add_argument("--widths", type=ints, help="network widths m = n to time (default: the rate-control table's "
                   "widths at the fit size)")
    s.add_argument("--steps", type=positive_int, help="timed steps per variant (default 200 on CUDA, 5 on CPU)")
    s.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    s.add_argument("--limit", type=positive_int, default=4, help="images to use (batched fitting uses them all)")
    s.add_argument("--fit-size", type=size, help="resize images to WxH for fitting (default: native)")
    s.add_argument("--variants", default="fp32-eager,grid,grid-eager-top,bf16-autocast,compiled,bf16-compiled",
                   help="fitting variants (grid: the separable grid path; grid-eager-top: it without the native "
                   "top layer; bf16: hidden and output products in bf16, "
                   "input layer and sines in fp32; CUDA only); fp32-eager is always run as the baseline")
    s.add_argument("--batch", type=positive_int, default=4, help="K for batched fitting (--skip batch skips it)")
    s.add_argument("--sizes", type=sizes, help="render sizes WxH,WxH,... (default: 768x512,1920x1080,3840x2160)")
    s.add_argument("--direct-sizes", type=sizes, help="sizes at which direct CPU evaluation is timed too "
                   "(default: all; it is slow on a small CPU)")
    s.add_argument("--repeats", type=positive_int, default=3, help="render timings keep the fastest of these")
    s.add_argument("--blob", help="render this blob (default: encode the first image at the default setting)")
    s.add_argument("--render-steps", type=positive_int, default=100,
                   help="fit steps for the blob rendered when no --blob is given")
    s.add_argument("--compile-render", action="store_true", help="also time the fast renderer's compiled sine")
    s.add_argument("--full-encode", action="store_true",
                   help="time the real encoder at its default setting on the first image (slow on CPU)")
    s.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--skip", default="", help="comma-separated parts to skip: fit,reference,batch,render")
    s.add_argument("--bpp", type=float, default=1.0, help="rate of the reference comparison (CPU)")
    s.add_argument("--efforts", type=ints, help="encoder efforts timed against the reference (default: the default)")
    s.add_argument("--reference-steps", type=positive_int, default=1000,
                   help="full-image steps of the reference encode (the encoder before effort levels: 1000)")
    s.add_argument("--results", help="resumable results file of the reference comparison (a stopped run "
                   "continues where it was)")
    s.set_defaults(func=cmd_bench_speed)

    t = bench_sub.add_parser("tiled-render", help="issue 28: a 512x512 crop render of a 2048x1536 tiled blob "
                             "against one of a one-tile 768x512 blob, alternated (done when the median ratio <= 2)")
    t.add_argument("--images", required=True, help="directory of photos (the first is used)")
    t.add_argument("--json", required=True, help="where to write the report")
    t.add_argument("--rounds", type=positive_int, default=15, help="A/B rounds, the order alternating")
    t.add_argument("--steps", type=positive_int, default=5, help="fit steps of both encodes (render cost does "
                   "not depend on them)")
    t.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--blob-dir", help="keep the two blobs here and reuse them on a later run (the encodes are slow)")
    t.set_defaults(func=cmd_bench_tiled_render)


def cmd_bench_paper(args: argparse.Namespace) -> int:
    from tuner_model.bench.paper import PaperOptions, run_paper_bench

    opts = PaperOptions(epochs=args.epochs, width=args.width, device=args.device, methods=args.methods,
                        limit=args.limit, schedule=args.schedule, tuner_overrides=overrides(args.tuner),
                        size=args.size, batches=args.batches, results=Path(args.results) if args.results else None)
    report = run_paper_bench(Path(args.images), opts, log=sys.stderr)
    atomic_write(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(json.dumps(report["mean"], indent=2))
    return 0


def overrides(pairs: list[str] | None) -> dict:
    """KEY=VALUE pairs (values parsed as JSON when they can be) for exploring a benchmark's settings."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TunerError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def cmd_rd(args: argparse.Namespace) -> int:
    from tuner_cli.progress import RunProgress
    from tuner_model.bench.rd import RdOptions, plot, run_rd

    opts = RdOptions(bpps=args.bpp, steps=args.steps, device=args.device, limit=args.limit, size=args.size,
                     effort=args.effort, results=Path(args.results) if args.results else None)
    report = run_rd(Path(args.images), opts, log=sys.stderr, progress=RunProgress())
    out = Path(args.json)
    atomic_write(out, (json.dumps(report, indent=2) + "\n").encode())
    plot_path = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(report, plot_path)
    print(json.dumps({"mean": report["mean"], "plot": str(plot_path)}, indent=2))
    return 0


def cmd_rc_fit(args: argparse.Namespace) -> int:
    from tuner_model.bench.rcfit import RcFitOptions, fit_table

    opts = RcFitOptions(bpps=args.bpp, guesses=args.guesses, depths=args.depths, effort=args.effort, steps=args.steps,
                        device=args.device, limit=args.limit, size=args.size,
                        results=Path(args.results) if args.results else None)
    table = fit_table(Path(args.images), opts, log=sys.stderr)
    atomic_write(args.json, (json.dumps(table, indent=2) + "\n").encode())
    print(json.dumps(table["rows"], indent=2))
    return 0


def cmd_bench_cancel(args: argparse.Namespace) -> int:
    import torch

    from tuner_model.bench.cancel import CancelOptions, bench_cancel
    from tuner_model.bench.machine import describe_machine

    w, h = args.size
    opts = CancelOptions(width=w, height=h, bpp=args.bpp, effort=args.effort, after=tuple(args.after),
                         device=args.device)
    device = torch.device(args.device if args.device != "auto" else "cpu")
    report = {"machine": describe_machine(device), **bench_cancel(opts, log=lambda m: print(m, file=sys.stderr))}
    atomic_write(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(json.dumps({k: report[k] for k in ("worst_latency_s", "peak_rss_mib", "image_mib")}, indent=2))
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from tuner_model.bench.speed import SpeedOptions, run_speed_bench

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


def cmd_bench_tiled_render(args: argparse.Namespace) -> int:
    from tuner_model.bench.tiled_render import TiledRenderOptions, run_tiled_render_bench

    opts = TiledRenderOptions(rounds=args.rounds, steps=args.steps, threads=args.threads,
                              blob_dir=Path(args.blob_dir) if args.blob_dir else None)
    report = run_tiled_render_bench(Path(args.images), opts, say=lambda m: print(m, file=sys.stderr))
    atomic_write(args.json, (json.dumps(report, indent=2) + "\n").encode())
    print(json.dumps({k: report[k] for k in ("median_ratio", "passes", "median_a_ms", "median_b_ms")}, indent=2))
    return 0
