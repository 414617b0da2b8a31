"""The `tuner` command line. Every failure the user can cause ends in one line on stderr and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tuner_cli.args import effort_level, output_format, positive_float, positive_int, quality_level
from tuner_cli.progress import ProgressBar
from tuner_model.core.errors import TunerError
from tuner_model.core.files import atomic_write
from tuner_model.rate.effort import DEFAULT_EFFORT, EFFORT_MAX, EFFORT_MIN

if TYPE_CHECKING:
    from tuner_model.codec.tiled_blob import TiledInfo

EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a command whose reader went away


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but without the usage dump
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


STDIO = "-"  # as an input, standard input; as an output, standard output


def _check_output(output: str) -> None:
    """Before any work: the output's folder exists (a long encode must not end in 'cannot write')."""
    if output != STDIO and not Path(output).resolve().parent.is_dir():
        raise TunerError(f"{output}: cannot write (no folder {str(Path(output).parent)!r})")


def _write(output: str, data: bytes) -> None:
    if output == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write(output, data)


def _summary(args: argparse.Namespace, record: dict) -> None:
    """The command's JSON line: on stdout, or on stderr when stdout carries the output itself."""
    print(json.dumps(record), file=sys.stderr if args.output == STDIO else sys.stdout)


def cmd_encode(args: argparse.Namespace) -> int:
    from tuner_model.core.image_io import load_image
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.rate.tiles import encode_any

    if args.model == "latent":
        return _encode_latent(args)
    if args.rate_weight is not None:
        raise TunerError("--lambda is for --model latent")

    settings = EncodeSettings(bpp=args.bpp, psnr=args.psnr, steps=args.steps, device=args.device, seed=args.seed,
                              effort=args.effort)
    _check_output(args.output)
    image = load_image(_read(args.input) if args.input == STDIO else args.input)
    # Above the working size the image is fitted as tiles, one version-4 blob (issue 28).
    fitted, blob = encode_any(image, settings, progress=ProgressBar())
    _write(args.output, blob)
    h, w = image.shape[:2]
    record = {"output": str(args.output), "width": w, "height": h, "bytes": len(blob),
              "bpp": round(8 * len(blob) / (w * h), 4), "psnr": fitted.meta.get("psnr"),
              "seconds": fitted.meta.get("seconds")}
    grid = getattr(fitted, "grid", None)
    if grid is not None:
        record["tiles"] = grid.count
    _summary(args, record)
    return 0


def _encode_latent(args: argparse.Namespace) -> int:
    """The latent-grid prototype (issue 27, stage 1): a rate weight, no rate control yet."""
    from tuner_model.core.image_io import load_image
    from tuner_model.rate.latent_encode import DEFAULT_STEPS, encode_latent, preset

    if args.bpp is not None or args.psnr is not None:
        raise TunerError("--model latent takes --lambda (a rate weight); it has no --bpp/--psnr rate control yet")
    _check_output(args.output)
    image = load_image(_read(args.input) if args.input == STDIO else args.input)
    if image.shape[2] != 3:
        raise TunerError("--model latent encodes RGB images only")
    pixels = (image * 255.0 + 0.5).clip(0, 255).astype("uint8")
    result = encode_latent(pixels, args.rate_weight if args.rate_weight is not None else 4e-3,
                           phases=preset(args.steps or DEFAULT_STEPS), seed=args.seed)
    _write(args.output, result.blob)
    h, w = image.shape[:2]
    _summary(args, {"output": str(args.output), "model": "latent", "width": w, "height": h,
                    "bytes": len(result.blob), "bpp": round(result.bpp, 4), "psnr": round(result.psnr, 4),
                    "seconds": round(result.seconds, 2)})
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from tuner_model.codec import decode_blob
    from tuner_model.codec.latent_blob import decode_latent_blob, is_latent_blob
    from tuner_model.core.coords import Crop
    from tuner_model.core.device import resolve_device
    from tuner_model.core.image_io import encode_image, format_for_path

    # Every option is checked before the blob is read or anything rendered.
    fmt = args.format or ("png" if args.output == STDIO else format_for_path(args.output))
    crop = Crop(*args.crop) if args.crop else Crop(0, 0, 1, 1)
    _check_output(args.output)
    device = resolve_device(args.device)
    data = _read(args.input)
    if is_latent_blob(data):
        from tuner_model.render.latent import render_latent

        pixels = render_latent(decode_latent_blob(data)[0], args.width, args.height, crop)
    else:
        from tuner_model.render.fitted import render_image

        pixels = render_image(decode_blob(data), args.width, args.height, crop, device=device)
    _write(args.output, encode_image(pixels, fmt, quality=args.quality))
    _summary(args, {"output": str(args.output), "width": pixels.shape[1], "height": pixels.shape[0]})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from tuner_model.codec import TiledInfo, read_info
    from tuner_model.codec.latent_blob import is_latent_blob, read_latent_info
    from tuner_model.models.latent import macs_per_pixel

    data = _read(args.input)
    if is_latent_blob(data):
        latent = read_latent_info(data)
        print(json.dumps({"width": latent.width, "height": latent.height, "channels": latent.config.channels,
                          "bytes": latent.bytes, "bpp": round(8 * latent.bytes / (latent.width * latent.height), 5),
                          "parameters": latent.network_parameters, "latents": latent.latents, "psnr": latent.psnr,
                          "model": {"kind": "latent", **latent.config.to_dict()},
                          "macs_per_pixel": macs_per_pixel(latent.config)}, indent=2))
        return 0
    info = read_info(data)
    out = {"width": info.width, "height": info.height, "channels": info.channels, "colour": info.colour,
           "bytes": info.bytes, "bpp": round(info.bpp, 5), "parameters": info.parameters,
           "psnr": info.meta.get("psnr")}
    if isinstance(info, TiledInfo):
        out["tiles"] = _tiles(info)
    else:
        out["model"] = info.config.to_dict()
    out["meta"] = info.meta
    print(json.dumps(out, indent=2))
    return 0


def _tiles(info: TiledInfo) -> dict:
    """A tiled blob's grid and each tile (its place, bytes, network and PSNR) for `tuner info`."""
    g = info.grid
    listed = [{"index": k, "column": k % g.nx, "row": k // g.nx, "left": left, "top": top, "bytes": t.bytes,
               "parameters": t.parameters, "psnr": t.meta.get("psnr"), "model": t.config.to_dict()}
              for k, ((left, top), t) in enumerate(zip(g.origins(), info.tiles, strict=True))]
    return {"count": g.count, "grid": [g.nx, g.ny], "tile_width": g.tile_width, "tile_height": g.tile_height,
            "overlap": g.overlap, "list": listed}


def _read(name: str) -> bytes:
    """The bytes of a file, or of standard input for `-`."""
    if name == STDIO:
        return sys.stdin.buffer.read()
    path = Path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TunerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TunerError(f"{path}: is a directory") from None
    except OSError as e:
        raise TunerError(f"{path}: cannot read ({e.strerror or e})") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tuner", description="Neural image compression with TUNER sinusoidal networks.")
    p.add_argument("--version", action="version", version=version_text())
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    e = sub.add_parser("encode", help="fit a network to an image and write its blob")
    e.add_argument("input", help="the image (png, jpeg, webp); - reads standard input")
    e.add_argument("-o", "--output", required=True, help="the blob; - writes standard output")
    e.add_argument("--steps", type=positive_int)
    e.add_argument("--bpp", type=positive_float, help="target bits per pixel (the blob stays at or under it)")
    e.add_argument("--psnr", type=positive_float, help="target quality in dB")
    e.add_argument("--effort", type=effort_level, default=DEFAULT_EFFORT,
                   help=f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best); default {DEFAULT_EFFORT}")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--model", default="tuner", choices=["tuner", "latent"],
                   help="tuner (default), or latent: the latent-grid prototype (experimental, docs/CODEC.md)")
    e.add_argument("--lambda", dest="rate_weight", type=positive_float,
                   help="--model latent: the rate weight (larger: smaller blob); default 0.004")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="render a blob to an image at any size")
    d.add_argument("input", help="the blob; - reads standard input")
    d.add_argument("-o", "--output", required=True,
                   help="output image; the format follows the extension (or --format); - writes standard output")
    d.add_argument("--format", type=output_format, help="png, webp, jpg or avif (default: the extension; png for -)")
    d.add_argument("--width", type=positive_int)
    d.add_argument("--height", type=positive_int)
    d.add_argument("--crop", type=float, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help="region in fractions of the image, e.g. 0 0 0.5 0.5")
    d.add_argument("--quality", type=quality_level, help="quality for jpg/webp/avif, 1..100")
    d.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="describe a blob as JSON")
    i.add_argument("input", help="the blob; - reads standard input")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    from tuner_cli.bench import register as register_bench

    register_bench(bsub)

    from tuner_cli.serve import register as register_service

    register_service(sub)
    from tuner_cli.access import register as register_access

    register_access(sub, _Parser)
    from tuner_cli.db import register as register_db

    register_db(sub)
    return p


def version_text() -> str:
    """`tuner --version`: the installed distribution's version and the blob format's."""
    from importlib.metadata import PackageNotFoundError, version

    from tuner_model.codec.container import VERSION as FORMAT_VERSION
    from tuner_model.codec.tiled_blob import VERSION as TILED_VERSION

    try:
        installed = version("tuner-service")
    except PackageNotFoundError:
        installed = "unknown (not installed)"
    return f"tuner {installed} (blob format {FORMAT_VERSION}; {TILED_VERSION} for an image fitted as tiles)"


def _quiet_stdout() -> None:
    """The reader of stdout has gone (`tuner info x.tnr | head`): point stdout at /dev/null, so that Python's
    flush at exit does not fail again with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except TunerError as e:
        sys.stderr.write(f"tuner: error: {e}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("tuner: interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write("tuner: error: out of memory\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
