"""The `tuner` command line. Every failure the user can cause ends in one line on stderr and a
non-zero exit status, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tuner_cli.args import effort_level, positive_float, positive_int
from tuner_cli.progress import ProgressBar
from tuner_model.core.errors import TunerError
from tuner_model.core.files import atomic_write
from tuner_model.rate.effort import DEFAULT_EFFORT, EFFORT_MAX, EFFORT_MIN

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but without the usage dump
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def cmd_encode(args: argparse.Namespace) -> int:
    from tuner_model.core.image_io import load_image
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings

    image = load_image(args.input)
    settings = EncodeSettings(bpp=args.bpp, psnr=args.psnr, steps=args.steps, device=args.device, seed=args.seed,
                              effort=args.effort)
    fitted, blob = encode(image, settings, progress=ProgressBar())
    atomic_write(args.output, blob)
    h, w = image.shape[:2]
    print(json.dumps({"output": str(args.output), "width": w, "height": h, "bytes": len(blob),
                      "bpp": round(8 * len(blob) / (w * h), 4), "psnr": fitted.meta.get("psnr"),
                      "seconds": fitted.meta.get("seconds")}))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from tuner_model.codec import decode_blob
    from tuner_model.core.coords import Crop
    from tuner_model.core.device import resolve_device
    from tuner_model.core.image_io import format_for_path, save_image

    format_for_path(args.output)  # fail on a bad extension before the work
    fitted = decode_blob(_read(Path(args.input)))
    crop = Crop(*args.crop) if args.crop else Crop(0, 0, 1, 1)
    device = resolve_device(args.device)
    pixels = fitted.render(args.width, args.height, crop, device=device)
    save_image(pixels, args.output, quality=args.quality)
    print(json.dumps({"output": str(args.output), "width": pixels.shape[1], "height": pixels.shape[0]}))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from tuner_model.codec import read_info

    data = _read(Path(args.input))
    info = read_info(data)
    out = {"width": info.width, "height": info.height, "channels": info.channels, "colour": info.colour,
           "bytes": info.bytes, "bpp": round(info.bpp, 5), "parameters": info.parameters,
           "psnr": info.meta.get("psnr"), "model": info.config.to_dict(), "meta": info.meta}
    print(json.dumps(out, indent=2))
    return 0


def _read(path: Path) -> bytes:
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
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    e = sub.add_parser("encode", help="fit a network to an image and write its blob")
    e.add_argument("input")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--steps", type=positive_int)
    e.add_argument("--bpp", type=positive_float, help="target bits per pixel (the blob stays at or under it)")
    e.add_argument("--psnr", type=positive_float, help="target quality in dB")
    e.add_argument("--effort", type=effort_level, default=DEFAULT_EFFORT,
                   help=f"how much fitting, {EFFORT_MIN} (fastest) to {EFFORT_MAX} (best); default {DEFAULT_EFFORT}")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="render a blob to an image at any size")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True, help="output image; the format follows the extension")
    d.add_argument("--width", type=positive_int)
    d.add_argument("--height", type=positive_int)
    d.add_argument("--crop", type=float, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help="region in fractions of the image, e.g. 0 0 0.5 0.5")
    d.add_argument("--quality", type=positive_int, help="quality for jpg/webp/avif")
    d.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="describe a blob as JSON")
    i.add_argument("input")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    from tuner_cli.bench import register as register_bench

    register_bench(bsub)

    from tuner_cli.serve import register as register_service

    register_service(sub)
    from tuner_cli.access import register as register_access

    register_access(sub, _Parser)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
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
