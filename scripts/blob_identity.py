#!/usr/bin/env python3
"""Issue 26's identity check: encode the shipped samples at 3 rates x 2 efforts (and one PSNR target, and one
batch of two) through the `tuner` command with a fixed seed, and write each blob's SHA-256, size and PSNR
to a JSON file. Run it on two commits of main, on one machine, and compare the files with `--compare`:
a refactor that changes no arithmetic gives the same bytes.

    scripts/blob_identity.py OUT.json [--tree DIR]    # record (DIR: another checkout's code)
    scripts/blob_identity.py --compare A.json B.json  # differences, exit 1 if any
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("caps-96x64", "parrots-96x64", "parrots-192x128")
RATES = (["--bpp", "0.5"], ["--bpp", "1"], ["--bpp", "2"])
EFFORTS = ("1", "4")
TARGET = ["--psnr", "28"]


TREE = ROOT  # the checkout whose code runs (--tree: another worktree, e.g. the previous main)


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    return subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True, env=env,
                          cwd=TREE).stdout


def _encode(sample: str, args: list[str], effort: str, out_dir: Path) -> dict[str, object]:
    src = ROOT / "tuner_model" / "samples" / f"{sample}.png"
    out = out_dir / f"{sample}.tnr"
    t0 = time.perf_counter()
    _run("-c", "from tuner_cli.main import main; main()", "encode", str(src), "-o", str(out), "--effort", effort,
         "--seed", "0", *args)
    seconds = time.perf_counter() - t0
    blob = out.read_bytes()
    psnr = _run("-c", "import sys; from tuner_model.codec import read_info; "
                      "print(read_info(open(sys.argv[1], 'rb').read()).meta.get('psnr'))", str(out))
    return {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "psnr": float(psnr),
            "seconds": round(seconds, 2)}


def record(path: Path, only: list[str] | None = None) -> None:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in SAMPLES:
            for effort in EFFORTS:
                for args in (*RATES, TARGET):
                    key = f"{sample} effort {effort} {' '.join(args)}"
                    if only and key not in only:
                        continue
                    results[key] = _encode(sample, args, effort, Path(tmp))
                    print(key, results[key], flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TREE, capture_output=True, text=True).stdout.strip()
    path.write_text(json.dumps({"commit": commit, "machine": platform.processor() or platform.machine(),
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "blobs": results},
                               indent=1) + "\n")


def compare(a: Path, b: Path) -> int:
    old, new = json.loads(a.read_text())["blobs"], json.loads(b.read_text())["blobs"]
    differ = 0
    for key in sorted(set(old) | set(new)):
        x, y = old.get(key), new.get(key)
        if x is None or y is None or x["sha256"] != y["sha256"]:
            differ += 1
            print(f"DIFFERS {key}: {x} -> {y}")
    print(f"{len(old)} blobs before, {len(new)} after, {differ} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run (default: this one)")
    parser.add_argument("--only", help="the keys to run, separated by ';' (e.g. 'parrots-192x128 effort 4 --bpp 1')")
    args = parser.parse_args()
    global TREE
    TREE = args.tree.resolve()
    if args.compare:
        return compare(*args.files)
    record(args.files[0], args.only.split(";") if args.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
