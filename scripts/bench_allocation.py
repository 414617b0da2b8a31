"""Issue 28, item 2: is sharing a tiled image's bytes by the tiles' rate-distortion slopes better than equal
shares? Paired: each image is encoded as tiles twice, with the same seed, request and tiles, once per
allocation (tuner_model/rate/allocate.py), and the whole image's PSNR at its bytes is compared. With --one,
also as one network (item 1, the working size: is one network at this size better than its tiles?).

    .venv/bin/python scripts/bench_allocation.py IMAGE... [--bpp 1] [--effort 1] [--working 400x272]
        [--json docs/results/issue28-allocation/runs.json]

The default working size cuts a 768x512 Kodak image into 2 x 2 tiles of 392x264 (the service's own working
size would leave it one tile). Each (image, allocation) is recorded once in the JSON, the resumable results;
progress goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "docs" / "results" / "issue28-allocation" / "runs.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--bpp", type=float, default=1.0)
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--working", default="400x272")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--one", action="store_true", help="also encode each image as one network (the working "
                                                       "size question: is one network better than its tiles?)")
    args = ap.parse_args()

    from tuner_model.codec.tiled_blob import read_tiled_info
    from tuner_model.core.image_io import load_image
    from tuner_model.rate.request import EncodeSettings
    from tuner_model.rate.tiles import encode_any

    working = tuple(int(v) for v in args.working.split("x"))
    results = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    results.update({"what": "whole-image PSNR of a tiled encode, bytes shared by slopes vs equally (paired)",
                    "bpp": args.bpp, "effort": args.effort, "working": list(working)})
    settings = EncodeSettings(bpp=args.bpp, effort=args.effort, device="cpu", seed=0)
    for path in args.images:
        image = load_image(path)
        for allocation in ("equal", "slopes", *(["one"] if args.one else [])):
            key = f"{path.name} {allocation}"
            if key in results["runs"]:
                continue
            t0 = time.monotonic()
            if allocation == "one":  # a working size the image fits in: one network
                fitted, blob = encode_any(image, settings, working=(max(image.shape[:2]), min(image.shape[:2])))
                tile_bytes = [len(blob)]
            else:
                fitted, blob = encode_any(image, settings, working=working, allocation=allocation)  # type: ignore[arg-type]
                tile_bytes = [t.bytes for t in read_tiled_info(blob).tiles]
            results["runs"][key] = {"psnr": fitted.meta["psnr"], "bytes": len(blob), "tile_bytes": tile_bytes,
                                    "seconds": round(time.monotonic() - t0, 1),
                                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
            print(key, results["runs"][key], flush=True)
    pairs = [(results["runs"][f"{p.name} equal"], results["runs"][f"{p.name} slopes"]) for p in args.images]
    deltas = [s["psnr"] - e["psnr"] for e, s in pairs]
    results["summary"] = {"images": len(pairs), "mean_gain_db": round(statistics.mean(deltas), 3),
                          "gains_db": [round(d, 3) for d in deltas], "wins": sum(d > 0 for d in deltas),
                          "mean_bytes_equal": round(statistics.mean(e["bytes"] for e, _ in pairs)),
                          "mean_bytes_slopes": round(statistics.mean(s["bytes"] for _, s in pairs))}
    ones = [(results["runs"].get(f"{p.name} one"), results["runs"][f"{p.name} slopes"]) for p in args.images]
    if all(o is not None for o, _ in ones):
        results["summary"]["one_network_minus_slopes_db"] = [round(o["psnr"] - s["psnr"], 3) for o, s in ones]
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
