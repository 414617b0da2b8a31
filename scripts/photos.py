"""Real multi-megapixel photographs to measure on (issue 28, item 7), from Debian packages (no other download).

    .venv/bin/python scripts/photos.py prepare [--out .cache/photos]
    .venv/bin/python scripts/photos.py classical --bpp 1 [--out .cache/photos]
        [--json docs/results/issue28-photos/classical.json]

`prepare` installs the packages that hold the photos (apt-get, through sudo when not root) when a source file is
absent, then writes centre crops as PNG to --out: `<name>-2048x1536.png` for every photo, and
`<name>-4000x3000.png` where the source is large enough, with `manifest.json` beside them (the package, its
version, the file, its size and SHA-256, and the copyright and license that the package's
/usr/share/doc/<pkg>/copyright states for that file).

The crop rule, for a target of w × h: the scale s = max(w / W, h / H) of a W × H source is the one that makes
the source just cover the target. If s < 1 (the source is larger than needed in both dimensions) the source is
first resized down to ceil(W·s) × ceil(H·s) with Pillow's LANCZOS, so that the crop keeps as much of the scene
as the aspect ratio allows; if s = 1 it is used as it is; if s > 1 (smaller than the target in one dimension)
that size is skipped, never upscaled. Then the centre w × h is cut out (offsets floored). EXIF orientation is
applied and the result is 8-bit RGB.

`classical` reports, for each 2048×1536 crop and each --bpp, the JPEG, WebP and AVIF file of the highest quality
that fits the byte budget (bpp · w · h / 8 bytes; tuner_model.core.classical.at_most_bytes, the settings every
comparison in this repository uses) and its PSNR (tuner_model.core.metrics.psnr, peak 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / ".cache" / "photos"
DEFAULT_JSON = REPO / "docs" / "results" / "issue28-photos" / "classical.json"
SIZES: tuple[tuple[int, int], ...] = ((2048, 1536), (4000, 3000))


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    path: str
    content: str


# Photographs (not drawings or gradients) of different content; the first two reach 4000×3000.
PHOTOS: tuple[Photo, ...] = (
    Photo(
        "dragonfly",
        "lomiri-wallpapers-16.04",
        "/usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
        "a dragonfly on a twig among sunlit leaves, blue sky",
    ),
    Photo(
        "kleiber",
        "lomiri-wallpapers-20.04",
        "/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
        "a nuthatch on tree bark, strongly defocused snowy background",
    ),
    Photo(
        "seeding",
        "lomiri-wallpapers-16.04",
        "/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
        "dandelion clocks in grass against the low sun, shallow depth of field",
    ),
    Photo(
        "sunset",
        "lomiri-wallpapers-16.04",
        "/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
        "sun over a mountain ridge, lens flare, rocky grass in the foreground",
    ),
    Photo(
        "picosdeeuropa",
        "lomiri-wallpapers-16.04",
        "/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "limestone mountains with snow, clouds, a meadow path",
    ),
)


class PrepareError(RuntimeError):
    pass


def _run(cmd: list[str]) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def install(packages: list[str]) -> None:
    """apt-get install the packages (sudo when not root); one apt-get update and a retry when the first fails."""
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise PrepareError(f"need root or sudo to apt-get install {' '.join(packages)}")
        prefix = ["sudo", "-n"]
    env_cmd = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive"]
    cmd = [*env_cmd, "apt-get", "install", "-y", "--no-install-recommends", *packages]
    print("installing:", " ".join(packages), flush=True)
    if _run(cmd):
        return
    if _run([*env_cmd, "apt-get", "update"]) and _run(cmd):
        return
    raise PrepareError(f"apt-get install {' '.join(packages)} failed (tried {' '.join(cmd)}, after apt-get update)")


def package_version(package: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _stanzas(text: str) -> list[dict[str, list[str]]]:
    """The paragraphs of a Debian machine-readable copyright file as field -> lines (continuations stripped)."""
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()]
        out.append(fields)
    return out


def copyright_for(package: str, path: str) -> dict[str, str | None]:
    """The Copyright and License fields that the package's copyright file states for the file: the stanza that
    names it (its Files paths are the source tree's, so matched on the file name), else the last stanza whose
    Files glob matches (DEP-5: the last match wins)."""
    file = f"/usr/share/doc/{package}/copyright"
    stanzas = [s for s in _stanzas(Path(file).read_text(encoding="utf-8")) if "Files" in s]
    base = Path(path).name
    named = [s for s in stanzas if any(Path(p).name == base for p in " ".join(s["Files"]).split())]
    globbed = [s for s in stanzas if any(fnmatch.fnmatch(path, "*/" + p) for p in " ".join(s["Files"]).split())]
    match = named[0] if named else (globbed[-1] if globbed else None)
    if match is None:
        return {"copyright": None, "license": None, "copyright_file": file}
    return {
        "copyright": " ".join(match.get("Copyright", [])) or None,
        "license": (match.get("License") or [None])[0],
        "copyright_file": file,
    }


def crop_plan(width: int, height: int, tw: int, th: int) -> tuple[float, tuple[int, int], tuple[int, int]] | None:
    """(scale, size after the resize, crop offset) for a tw × th centre crop of a width × height source; None when
    the source is smaller than the target in either dimension (never upscaled)."""
    s = max(tw / width, th / height)
    if s > 1:
        return None
    size = (width, height) if s == 1 else (max(tw, math.ceil(width * s)), max(th, math.ceil(height * s)))
    return s, size, ((size[0] - tw) // 2, (size[1] - th) // 2)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(out: Path) -> None:
    missing = sorted({p.package for p in PHOTOS if not Path(p.path).is_file()})
    if missing:
        install(missing)
        still = [p.path for p in PHOTOS if not Path(p.path).is_file()]
        if still:
            raise PrepareError(f"installed {' '.join(missing)} but these are still absent: {' '.join(still)}")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for photo in PHOTOS:
        raw = Path(photo.path).read_bytes()
        with Image.open(photo.path) as im:
            src = ImageOps.exif_transpose(im).convert("RGB")
        w, h = src.size
        crops: list[dict[str, Any]] = []
        for tw, th in SIZES:
            plan = crop_plan(w, h, tw, th)
            if plan is None:
                print(f"{photo.name}: {w}x{h} is too small for {tw}x{th}, skipped")
                continue
            s, size, (x, y) = plan
            img = src if size == (w, h) else src.resize(size, Image.Resampling.LANCZOS)
            crop = img.crop((x, y, x + tw, y + th))
            file = f"{photo.name}-{tw}x{th}.png"
            crop.save(out / file, "PNG")
            crops.append(
                {
                    "file": file,
                    "size": [tw, th],
                    "scale": round(s, 6),
                    "resized_to": list(size),
                    "crop_offset": [x, y],
                    "pixels_sha256": sha256(np.asarray(crop, dtype=np.uint8).tobytes()),
                }
            )
            print(f"{photo.name}: {w}x{h} -> resize {size[0]}x{size[1]} -> crop {tw}x{th} at ({x}, {y}): {file}")
        entries.append(
            {
                "name": photo.name,
                "content": photo.content,
                "package": photo.package,
                "package_version": package_version(photo.package),
                "source": photo.path,
                "source_size": [w, h],
                "source_bytes": len(raw),
                "source_sha256": sha256(raw),
                **copyright_for(photo.package, photo.path),
                "crops": crops,
            }
        )
    manifest = {
        "what": "centre crops of photographs from Debian packages (scripts/photos.py prepare)",
        "crop_rule": (
            "s = max(w/W, h/H); if s < 1 resize to ceil(W*s) x ceil(H*s) with Pillow LANCZOS, if s > 1 skip; "
            "then the centre w x h (offsets floored); EXIF orientation applied, 8-bit RGB, PNG"
        ),
        "pillow": Image.__version__,
        "photos": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out / 'manifest.json'}")


def classical(out: Path, bpps: list[float], json_path: Path) -> None:
    from PIL import features

    from tuner_model.core.classical import CODECS, at_most_bytes, decode
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr

    manifest = json.loads((out / "manifest.json").read_text())
    tw, th = SIZES[0]
    rows: list[dict[str, Any]] = []
    for entry in manifest["photos"]:
        file = f"{entry['name']}-{tw}x{th}.png"
        if not (out / file).is_file():
            raise PrepareError(f"{out / file} is absent: run `prepare` first")
        image = load_image(out / file)
        for bpp in bpps:
            budget = int(bpp * tw * th / 8)
            row: dict[str, Any] = {"image": file, "bpp_target": bpp, "max_bytes": budget}
            for codec in CODECS:
                t = time.perf_counter()
                c = at_most_bytes(image, codec, budget)
                secs = round(time.perf_counter() - t, 2)
                if c is None:
                    row[codec] = None
                else:
                    value = psnr(decode(c.data, "RGB"), image)
                    row[codec] = {
                        "quality": c.quality,
                        "bytes": len(c.data),
                        "bpp": round(8 * len(c.data) / (tw * th), 4),
                        "psnr": round(value, 4),
                        "search_seconds": secs,
                    }
                print(f"{file} {bpp} bpp {codec}: {row[codec]}", flush=True)
            rows.append(row)
    means: dict[str, dict[str, float]] = {}
    for bpp in bpps:
        sel = [r for r in rows if r["bpp_target"] == bpp]
        means[str(bpp)] = {
            codec: round(float(np.mean([r[codec]["psnr"] for r in sel])), 4)
            for codec in CODECS
            if all(r[codec] is not None for r in sel)
        }
    result = {
        "what": (
            "JPEG/WebP/AVIF at the largest quality whose file fits bpp*w*h/8 bytes "
            "(tuner_model.core.classical.at_most_bytes), PSNR by tuner_model.core.metrics.psnr (peak 1, RGB)"
        ),
        "command": "python scripts/photos.py classical " + " ".join(f"--bpp {b:g}" for b in bpps),
        "date": dt.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "note": "search_seconds on a shared machine"},
        "pillow": Image.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "webp": features.version("webp"),
        "avif": features.version("avif"),
        "settings": "JPEG 4:2:0 optimize, WebP method 6, AVIF speed 4",
        "rows": rows,
        "mean_psnr": means,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="install the packages if needed and write the crops and manifest.json")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    c = sub.add_parser("classical", help="JPEG/WebP/AVIF PSNR at a byte budget on the 2048x1536 crops")
    c.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where `prepare` wrote the crops")
    c.add_argument("--bpp", type=float, action="append", required=True, help="bits per pixel (repeatable)")
    c.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.out)
        else:
            classical(args.out, args.bpp, args.json)
    except (PrepareError, OSError) as e:
        print(f"photos.py {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
