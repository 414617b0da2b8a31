"""Our gap to JPEG and WebP for every encode of an rc-fit results file: each classical codec swept over its
qualities on the same image and interpolated (linear in log bpp) at the encode's bytes, as `tuner bench rd`
does (its classical_curve and interpolate).

    .venv/bin/python scripts/rcfit_gaps.py docs/results/rc-fit-native-effort4-progress.json \
        /work/shared/data/kodak docs/results/rc-fit-native-gaps.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tuner_model.bench.rd import classical_curve, interpolate
from tuner_model.core.image_io import load_image


def main(results: str, images: str, out_path: str) -> int:
    runs = json.loads(Path(results).read_text())["encodes"]
    curves: dict[str, tuple[dict, tuple[int, ...]]] = {}
    out = {}
    for key, r in sorted(runs.items()):
        if "error" in r:
            continue
        name = key.split("@")[0]
        if name not in curves:
            img = load_image(Path(images) / name)
            curves[name] = ({f: classical_curve(img, f) for f in ("JPEG", "WEBP")}, img.shape)
        curve, shape = curves[name]
        bpp = 8 * r["bytes"] / (shape[0] * shape[1])
        jpeg, webp = interpolate(curve["JPEG"], bpp)[0], interpolate(curve["WEBP"], bpp)[0]
        out[key] = {"bpp": round(bpp, 4), "depth": r["depth"], "psnr": r["psnr"], "jpeg_psnr": jpeg,
                    "webp_psnr": webp, "minus_jpeg": r["psnr"] - jpeg,
                    "minus_webp": None if webp is None else r["psnr"] - webp, "seconds": r["seconds"]}
        webp_text = "-" if webp is None else f"{webp:.2f}"
        print(f"{key:28s} {bpp:.3f} bpp {r['psnr']:.2f} dB, jpeg {jpeg:.2f} ({r['psnr'] - jpeg:+.2f}), "
              f"webp {webp_text}, {r['seconds']:.0f} s")
    Path(out_path).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
