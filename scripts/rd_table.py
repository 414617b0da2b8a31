"""Markdown tables of a `tuner bench rd` results file (the resumable one, keyed image@bpp): per image and rate
our PSNR minus JPEG's and WebP's at our bytes (both measured in the run that made the encode), and per rate
the mean gap to JPEG beside the published codecs' gaps to Pillow's JPEG on all 24 Kodak images (issue 11),
with our distance to each. Works on a partial run: only images with every rate done are counted.

    .venv/bin/python scripts/rd_table.py docs/results/rd-native-deep-effort4-progress.json \
        [--images kodim01.png,kodim03.png,...] [--bpp 0.25,0.5,0.75,1.0]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

# Published gaps to Pillow 13's JPEG on all 24 Kodak images, dB (issue 11's table).
PUBLISHED = {
    "COIN": {0.25: -1.0, 0.5: -2.1, 0.75: -2.6, 1.0: -3.0},
    "Strümpler et al.": {0.25: 1.0, 0.5: 0.2, 0.75: -0.2, 1.0: -0.7},
    "WebP (24 images)": {0.25: 2.1, 0.5: 2.0, 0.75: 2.2, 1.0: 2.4},
}


def _f(v: float | None, fmt: str = "+.2f") -> str:
    return "–" if v is None else format(v, fmt)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--images", help="comma-separated names (default: every image with all rates)")
    ap.add_argument("--bpp", default="0.25,0.5,0.75,1.0")
    args = ap.parse_args()
    rows = json.loads(Path(args.results).read_text())["rows"]
    bpps = [float(b) for b in args.bpp.split(",")]
    names = sorted({k.split("@")[0] for k in rows}) if not args.images else args.images.split(",")
    complete = [n for n in names if all(f"{n}@{b}" in rows for b in bpps)]
    print(f"{len(complete)} images with every rate: {', '.join(complete)}\n")
    print("| image | target bpp | bpp | PSNR | SSIM | JPEG at our bytes | − JPEG | − WebP | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in complete:
        for b in bpps:
            r = rows[f"{n}@{b}"]
            webp = None if r["webp_psnr"] is None else r["psnr"] - r["webp_psnr"]
            print(f"| {n.split('.')[0]} | {b} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                  f"{r['jpeg_psnr']:.2f} | {r['psnr'] - r['jpeg_psnr']:+.2f} | {_f(webp)} | {r['seconds']:.0f} |")
    print()
    head = " | ".join(f"{name} gap, ours − it" for name in PUBLISHED)
    print(f"| bpp | mean PSNR | mean − JPEG | {head} | mean − WebP (images) | seconds (range) |")
    print("|---|---|---|" + "---|" * len(PUBLISHED) + "---|---|")
    for b in bpps:
        rs = [rows[f"{n}@{b}"] for n in complete]
        if not rs:
            continue
        gap = statistics.mean(r["psnr"] - r["jpeg_psnr"] for r in rs)
        webps = [r["psnr"] - r["webp_psnr"] for r in rs if r["webp_psnr"] is not None]
        pub = " | ".join(f"{p[b]:+.1f}, {gap - p[b]:+.2f}" for p in PUBLISHED.values())
        secs = [r["seconds"] for r in rs]
        webp = f"{statistics.mean(webps):+.2f} ({len(webps)})" if webps else "–"
        print(f"| {b} | {statistics.mean(r['psnr'] for r in rs):.2f} | {gap:+.2f} | {pub} | {webp} | "
              f"{statistics.mean(secs):.0f} ({min(secs):.0f}–{max(secs):.0f}) |")


if __name__ == "__main__":
    main()
