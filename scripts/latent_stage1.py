"""Stage 1 of the latent-grid model (issue 27): the prototype with its entropy model on 4 Kodak images,
a few rate weights λ each, PSNR interpolated at 0.25 / 0.5 / 1 bpp (linear in log bpp between the two
nearest encodes) and set beside today's encoder (effort 4) on the same images.

Resumable: finished encodes are kept in --results with the settings; a progress line per encode goes to
stdout (tee it into a log). Usage:
    python scripts/latent_stage1.py --images ../shared/data/kodak --results docs/results/latent-stage1-progress.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

import tuner_model  # noqa: F401  (MKL dispatch before torch)
from tuner_model.bench.machine import cpu_summary
from tuner_model.bench.resume import load_runs, save_runs
from tuner_model.models.latent import LatentConfig, macs_per_pixel
from tuner_model.rate.latent_encode import encode_latent, preset

IMAGES = ("kodim01", "kodim03", "kodim05", "kodim07")
TARGETS = (0.25, 0.5, 1.0)


def upper_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    hull: list[tuple[float, float]] = []
    for p in sorted(points):
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = (math.log(hull[-2][0]), hull[-2][1]), (math.log(hull[-1][0]), hull[-1][1])
            x2, y2 = math.log(p[0]), p[1]
            if (y1 - y0) * (x2 - x0) <= (y2 - y0) * (x1 - x0):  # hull[-1] on or below the chord
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def interpolate(points: list[tuple[float, float]], bpp: float) -> float | None:
    pts = sorted(points)
    for (b0, p0), (b1, p1) in zip(pts[:-1], pts[1:], strict=True):
        if b0 <= bpp <= b1:
            t = (math.log(bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return p0 + t * (p1 - p0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lambdas", default="0.0015,0.005,0.02")
    ap.add_argument("--baseline", type=Path, default=Path("docs/results/rd-native-deep-effort4.json"))
    ap.add_argument("--only", default=",".join(IMAGES), help="images this process encodes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--report", type=Path, nargs="*", help="merge these results files into the report")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = LatentConfig()
    settings = {"steps": args.steps, "config": config.to_dict(), "preset": "mixed-ste-v2"}
    runs = load_runs(args.results, settings, "runs")
    if args.report:
        for path in args.report:
            runs.update(load_runs(path, settings, "runs"))
        report(runs, args, config)
        return
    lambdas = [float(v) for v in args.lambdas.split(",")]
    for name in args.only.split(","):
        image = np.asarray(Image.open(args.images / f"{name}.png").convert("RGB"))
        queue = list(lambdas)
        while queue:
            lam = queue.pop(0)
            key = f"{name}@{lam:g}"
            if key not in runs:
                started = time.strftime("%H:%M:%S")
                r = encode_latent(image, lam, config, preset(args.steps))
                runs[key] = {"image": name, "lambda": lam, "bpp": r.bpp, "psnr": r.psnr, "seconds": r.seconds,
                             "cpu_seconds": r.cpu_seconds, "bytes": len(r.blob), "machine": cpu_summary()}
                save_runs(args.results, settings, "runs", runs)
                print(f"{started} {key}: {r.bpp:.3f} bpp {r.psnr:.2f} dB {r.seconds:.0f} s "
                      f"(cpu {r.cpu_seconds:.0f} s)", flush=True)
            mine = [v for v in runs.values() if v["image"] == name]
            bpps = [v["bpp"] for v in mine]
            done = {v["lambda"] for v in mine}
            # Bracket every target: a larger λ below the lowest rate, a smaller one above the highest.
            if min(bpps) > min(TARGETS) and not queue:
                lam2 = max(done) * 3
                if lam2 not in done and lam2 < 1:
                    queue.append(lam2)
            if max(bpps) < max(TARGETS) and not queue:
                lam2 = min(done) / 3
                if lam2 not in done and lam2 > 1e-5:
                    queue.append(lam2)


def report(runs: dict, args: argparse.Namespace, config: LatentConfig) -> None:
    base = {im["image"].removesuffix(".png"): im["rows"] for im in json.loads(args.baseline.read_text())["images"]}
    rows = []
    for name in IMAGES:
        # Two readings of the same encodes. The curve through every encode (less those beaten by one at
        # fewer bits) is what the encoder gives. The upper concave hull in (log bpp, PSNR) leaves out an
        # encode below the chord of two others (some mid-λ fits land 2-3 dB under their neighbours): an
        # optimistic bound, what the encoder would give if no fit were unlucky.
        every = [(v["bpp"], v["psnr"]) for v in runs.values() if v["image"] == name]
        pts = [p for p in every if not any(q[0] <= p[0] and q[1] > p[1] for q in every if q != p)]
        hull = upper_hull(every)
        secs = [v["seconds"] for v in runs.values() if v["image"] == name]
        for t in TARGETS:
            ours, bound = interpolate(pts, t), interpolate(hull, t)
            old = next(r for r in base[name] if r["target_bpp"] == t)
            rows.append({"image": name, "bpp": t, "latent_psnr": ours, "tuner_psnr": old["psnr"],
                         "gain_db": None if ours is None else ours - old["psnr"],
                         "gain_db_hull": None if bound is None else bound - old["psnr"],
                         "webp_psnr": old.get("webp_psnr"),
                         "jpeg_psnr": old["jpeg_psnr"], "latent_seconds_max": max(secs, default=None),
                         "tuner_seconds": old["seconds"]})
    means, means_hull = {}, {}
    for t in TARGETS:
        g = [r["gain_db"] for r in rows if r["bpp"] == t]
        means[t] = None if None in g else sum(g) / len(g)
        g = [r["gain_db_hull"] for r in rows if r["bpp"] == t]
        means_hull[t] = None if None in g else sum(g) / len(g)
    encodes = sorted(runs.values(), key=lambda v: (v["image"], v["bpp"]))
    for v in encodes:
        v["on_hull"] = (v["bpp"], v["psnr"]) in upper_hull(
            [(u["bpp"], u["psnr"]) for u in encodes if u["image"] == v["image"]])
    out = {"macs_per_pixel": macs_per_pixel(config), "encodes": encodes, "rows": rows, "mean_gain_db": means,
           "mean_gain_db_hull": means_hull,
           "go": all(v is not None and v >= 1.0 for v in means.values())
           and all(v is not None and v >= 1.0 for v in means_hull.values())}
    args.results.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(r)
    print("mean gain (dB) over today's encoder:", means, "(hull:", means_hull, ")", "GO" if out["go"] else "NO-GO")


if __name__ == "__main__":
    main()
