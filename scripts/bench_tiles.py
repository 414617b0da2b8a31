"""Issue 28's end-to-end measurements of a large photo fitted as tiles across worker processes.

    .venv/bin/python scripts/bench_tiles.py run IMAGE --label NAME [--workers N] [--bpp 1] [--effort 1]
        [--json docs/results/issue28-tiles/runs.json]
    .venv/bin/python scripts/bench_tiles.py seams NAME IMAGE [--json ...] [--crop-out PNG]
    .venv/bin/python scripts/bench_tiles.py cancel IMAGE --label NAME (--serve | --workers N) [--json ...]

`run` starts a real stack on this machine (`tuner api` and N `tuner worker` processes on the local Redis, a
fresh data directory, each worker's fits limited to --threads threads (TUNER_FIT_THREADS), comparisons off so
that the time is the fit's), waits until the API sees the N workers, uploads IMAGE with the parameters, and
records the 202 (its `eta_s`: the admission estimate on those workers, and `tiles`), then polls the job to
the end: the wall time from the 202 to `succeeded`, the blob's bytes and PSNR. The blob is kept under
.cache/bench-tiles/NAME.tnr for `seams`. Each label is recorded once in the JSON (rerunning skips it: the
file is the resumable results), and the progress goes to stdout as it comes.

`seams` decodes that blob, renders it at its native size and compares the PSNR of the seam bands (the
pixels within the tiles' blend windows, where two or four tiles are blended) with that of the tiles'
interiors; and writes a crop around one tile corner at 4x zoom (rendered from the blob at that scale, not
resized) as a PNG, to be looked at.

`cancel` uploads IMAGE with no parameters to `tuner serve` (its embedded broker and one worker) or to the
Redis deployment (`tuner api` and N workers), records the 202, waits until tiles are being fitted, cancels
the job, and measures how long until every tile that was running has said it stopped (the workers' logs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JSON = REPO / "docs" / "results" / "issue28-tiles" / "runs.json"
BLOBS = REPO / ".cache" / "bench-tiles"
REDIS = os.environ.get("TUNER_BENCH_REDIS", "redis://127.0.0.1:6379/7")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner_cli", *args], env={**os.environ, **env},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def run(image: Path, label: str, workers: int, threads: int, params: dict[str, Any], out: Path) -> None:
    import redis

    results = _load(out)
    if label in results["runs"]:
        print(f"{label}: already recorded in {out}; skipped")
        return
    redis.Redis.from_url(REDIS).flushdb()
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-tiles-{label}-"))
    env = {"TUNER_BROKER_URL": REDIS, "TUNER_DATA_DIR": str(data_dir), "TUNER_COMPARISONS": "false",
           "TUNER_FIT_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    if threads:
        env.update({"TUNER_FIT_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                    "MKL_NUM_THREADS": str(threads)})
    port = _port()
    base = f"http://127.0.0.1:{port}"
    procs = [_start(["api", "--port", str(port)], env, data_dir / "api.log")]
    procs += [_start(["worker", "--concurrency", "1"], env, data_dir / f"worker-{i}.log") for i in range(workers)]
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while time.monotonic() < deadline:  # the API counts the workers that beat (its estimate uses them)
            try:
                seen = httpx.get(f"{base}/v1/estimate", params={"width": 64, "height": 64}, timeout=5).json()["workers"]
                if seen >= workers:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise SystemExit(f"the API saw {seen} of {workers} workers")
        r = httpx.post(f"{base}/v1/images", params=params, timeout=60,
                       files={"file": (image.name, image.read_bytes(), "image/png")})
        r.raise_for_status()
        accepted = r.json()
        t0 = time.monotonic()
        print(f"{label}: accepted, {accepted['tiles']} tiles, estimate {accepted['eta_s']} s on {workers} workers",
              flush=True)
        while True:
            job = httpx.get(f"{base}/v1/jobs/{accepted['job_id']}", timeout=10).json()
            if job["status"] not in ("queued", "running"):
                break
            print(f"{label}: {time.monotonic() - t0:7.1f} s  {job['status']}  {job['progress']:.3f}  "
                  f"eta {job['eta_s']}", flush=True)
            time.sleep(10)
        wall = time.monotonic() - t0
        if job["status"] != "succeeded":
            raise SystemExit(f"{label}: {job['status']}: {job['error']}")
        info = httpx.get(f"{base}/v1/images/{job['image_id']}", timeout=10).json()
        blob = httpx.get(f"{base}/v1/images/{job['image_id']}/weights", timeout=60).content
        BLOBS.mkdir(parents=True, exist_ok=True)
        (BLOBS / f"{label}.tnr").write_bytes(blob)
        results = _load(out)
        results["runs"][label] = {
            "image": image.name, "params": params, "workers": workers, "threads_per_worker": threads or "default",
            "tiles": accepted["tiles"], "estimate_s": accepted["eta_s"], "wall_s": round(wall, 1),
            "estimate_over_measured": round(accepted["eta_s"] / wall, 3), "bytes": info["bytes"],
            "bpp": info["bpp"], "psnr": info["psnr"], "fit_seconds": job.get("fit_seconds"),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_after": os.getloadavg(),
        }
        _save(out, results)
        print(f"{label}: {wall:.1f} s wall, {info['bytes']} bytes, {info['psnr']} dB", flush=True)
    finally:
        _stop(procs)


def cancel(image: Path, label: str, serve: bool, workers: int, out: Path) -> None:
    import re

    import redis

    results = _load(out)
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-tiles-{label}-"))
    env = {"TUNER_DATA_DIR": str(data_dir), "TUNER_COMPARISONS": "false", "TUNER_FIT_DEVICE": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}
    port = _port()
    base = f"http://127.0.0.1:{port}"
    if serve:
        logs = [data_dir / "serve.log"]
        procs = [_start(["serve", "--port", str(port)], env, logs[0])]
    else:
        redis.Redis.from_url(REDIS).flushdb()
        env.update({"TUNER_BROKER_URL": REDIS, "TUNER_FIT_THREADS": "1"})
        logs = [data_dir / f"worker-{i}.log" for i in range(workers)]
        procs = [_start(["api", "--port", str(port)], env, data_dir / "api.log")]
        procs += [_start(["worker", "--concurrency", "1"], env, log) for log in logs]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200 and httpx.get(
                        f"{base}/v1/estimate", params={"width": 64, "height": 64}, timeout=5).json()["workers"] >= (
                        1 if serve else workers):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        r = httpx.post(f"{base}/v1/images", timeout=120, files={"file": (image.name, image.read_bytes(), "image/png")})
        accepted = {"status_code": r.status_code, **r.json()}
        print(f"{label}: {r.status_code}, {accepted.get('tiles')} tiles, eta_s {accepted.get('eta_s')}", flush=True)
        r.raise_for_status()
        job_id = accepted["job_id"]

        def text() -> str:
            return "".join(log.read_text(errors="replace") for log in logs if log.exists())

        while len(re.findall(rf"job {job_id}: tile \d+ claimed", text())) < (1 if serve else workers):
            time.sleep(0.5)
        time.sleep(10)  # the tiles are well into their fits
        t0 = time.monotonic()
        d = httpx.delete(f"{base}/v1/jobs/{job_id}", timeout=30)
        answered = time.monotonic() - t0
        while True:
            log = text()
            running = len(re.findall(rf"job {job_id}: tile \d+ claimed", log)) - \
                len(re.findall(rf"job {job_id}: tile \d+ fitted", log))
            stopped = len(re.findall(rf"job {job_id}: tile \d+ stopped", log))
            if stopped >= running or time.monotonic() - t0 > 120:
                break
            time.sleep(0.2)
        job = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
        results = _load(out)
        results.setdefault("cancels", {})[label] = {
            "image": image.name, "serve": serve, "workers": 1 if serve else workers, "accepted": {
                k: accepted.get(k) for k in ("status_code", "tiles", "eta_s", "width", "height")},
            "delete_status": d.status_code, "delete_answered_s": round(answered, 2),
            "tiles_running_at_cancel": running, "tiles_stopped": stopped,
            "all_stopped_after_s": round(time.monotonic() - t0, 2), "job_status": job["status"],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        _save(out, results)
        print(json.dumps(results["cancels"][label], indent=2), flush=True)
    finally:
        _stop(procs)


def seams(label: str, image: Path, out: Path, crop_out: Path) -> None:
    from PIL import Image

    from tuner_model.codec import decode_blob
    from tuner_model.core.geometry import Crop
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr
    from tuner_model.render.fitted import render_image

    tiled = decode_blob((BLOBS / f"{label}.tnr").read_bytes())
    pixels = load_image(image)
    rendered = render_image(tiled)
    grid = tiled.grid
    band_x = np.zeros(grid.width, bool)
    band_y = np.zeros(grid.height, bool)
    centres_x, centres_y = np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5
    for lo, hi in grid.x.windows():
        band_x |= (centres_x > lo) & (centres_x < hi)
    for lo, hi in grid.y.windows():
        band_y |= (centres_y > lo) & (centres_y < hi)
    band = band_y[:, None] | band_x[None, :]
    corner = band_y[:, None] & band_x[None, :]

    def masked(mask: np.ndarray) -> float:
        return psnr(rendered[mask], pixels[mask])

    (lo_x, hi_x), (lo_y, hi_y) = grid.x.windows()[0], grid.y.windows()[0]
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    half = 48  # a 96x96 region around the first inner tile corner, rendered at 4x: 384x384
    crop = Crop(max(0.0, (cx - half) / grid.width), max(0.0, (cy - half) / grid.height),
                min(1.0, (cx + half) / grid.width), min(1.0, (cy + half) / grid.height))
    zoom = render_image(tiled, width=4 * 2 * half, crop=crop)
    crop_out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(zoom, 0, 1) * 255).astype(np.uint8)).save(crop_out)
    results = _load(out)
    results.setdefault("seams", {})[label] = {
        "psnr_whole": round(psnr(rendered, pixels), 3), "psnr_seam_bands": round(masked(band), 3),
        "psnr_interiors": round(masked(~band), 3), "psnr_corners": round(masked(corner), 3),
        "seam_band_share": round(float(band.mean()), 4), "crop_4x": str(crop_out.resolve().relative_to(REPO)),
        "crop_centre_px": [cx, cy],
    }
    _save(out, results)
    print(json.dumps(results["seams"][label], indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("image", type=Path)
    r.add_argument("--label", required=True)
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--threads", type=int, default=1, help="each worker's fit threads (0: the default)")
    r.add_argument("--bpp", type=float)
    r.add_argument("--effort", type=int)
    r.add_argument("--json", type=Path, default=DEFAULT_JSON)
    s = sub.add_parser("seams")
    s.add_argument("label")
    s.add_argument("image", type=Path)
    s.add_argument("--json", type=Path, default=DEFAULT_JSON)
    s.add_argument("--crop-out", type=Path)
    c = sub.add_parser("cancel")
    c.add_argument("image", type=Path)
    c.add_argument("--label", required=True)
    c.add_argument("--serve", action="store_true")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    if args.cmd == "run":
        params = {k: v for k, v in (("bpp", args.bpp), ("effort", args.effort)) if v is not None}
        run(args.image.resolve(), args.label, args.workers, args.threads, params, args.json)
    elif args.cmd == "cancel":
        cancel(args.image.resolve(), args.label, args.serve, args.workers, args.json)
    else:
        seams(args.label, args.image.resolve(), args.json,
              args.crop_out or args.json.parent / f"{args.label}-corner-4x.png")


if __name__ == "__main__":
    main()
