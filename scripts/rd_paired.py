"""Paired RD comparison: per image and rate, the PSNR of a new `tuner bench rd` run (or its resumable results
file) minus a reference run's, with the reference's JPEG at the same bytes beside it.

    .venv/bin/python scripts/rd_paired.py docs/results/rd-native-effort4.json new.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def per_image(path: str) -> dict[tuple[str, float], dict]:
    doc = json.loads(Path(path).read_text())
    out = {}
    if "rows" in doc and isinstance(doc["rows"], dict):  # a resumable results file: "image@bpp": row
        for key, row in doc["rows"].items():
            out[(key.rsplit("@", 1)[0], round(float(row["target_bpp"]), 3))] = row
        return out
    for im in doc["images"]:
        for row in im["rows"]:
            out[(im["image"], round(float(row["target_bpp"]), 3))] = row
    return out


def main(reference: str, new: str) -> int:
    ref, cur = per_image(reference), per_image(new)
    deltas = []
    print("| image | bpp | reference PSNR | new PSNR | new − reference | new − JPEG |")
    print("|---|---|---|---|---|---|")
    for key in sorted(set(ref) & set(cur)):
        r, c = ref[key], cur[key]
        d = c["psnr"] - r["psnr"]
        deltas.append(d)
        jpeg = c.get("jpeg_psnr")
        gap = f"{c['psnr'] - jpeg:+.2f}" if jpeg is not None else "—"
        print(f"| {key[0]} | {key[1]} | {r['psnr']:.2f} | {c['psnr']:.2f} | {d:+.2f} | {gap} |")
    if deltas:
        print(f"\n{len(deltas)} pairs, mean {sum(deltas) / len(deltas):+.3f} dB, "
              f"{sum(d > 0 for d in deltas)} better")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
