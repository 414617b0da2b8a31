"""How soon a DELETE stops a running fit of a large image, through the real service: `tuner api` and
`tuner worker` on a Redis database, a JPEG upload of a synthetic photo, cancel once the fit has run a while,
and the time until the job reads `cancelled`; the worker's peak memory (its fitting child's, from
/proc) is reported too.

    .venv/bin/python scripts/cancel_e2e.py --size 4440x2960 --after 30 --redis redis://127.0.0.1:6379/14
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from tuner_model.bench.cancel import synthetic_photo


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_kib(pid: int) -> int:
    """VmHWM (peak resident set) of `pid` and its children, in KiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            continue
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4440x2960")
    ap.add_argument("--bpp", type=float, default=0.25)
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--after", type=float, default=30.0, help="seconds of fitting before the DELETE")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--json")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    buf = io.BytesIO()
    Image.fromarray((synthetic_photo(w, h) * 255).astype("uint8")).save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TUNER_BROKER_URL": args.redis, "TUNER_DATA_DIR": tmp, "TUNER_FIT_DEVICE": "cpu",
               "TUNER_RENDER_COMPILE": "0", "TUNER_MAX_UPLOAD_BYTES": str(max(len(data) + 1, 25 << 20))}
        port = _port()
        base = f"http://127.0.0.1:{port}"
        logs = open(Path(tmp) / "log", "wb")  # noqa: SIM115
        api = subprocess.Popen([sys.executable, "-m", "tuner_cli", "api", "--port", str(port)], env=env,
                               stdout=logs, stderr=subprocess.STDOUT)
        worker = subprocess.Popen([sys.executable, "-m", "tuner_cli", "worker"], env=env, stdout=logs,
                                  stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            r = httpx.post(f"{base}/v1/images", params={"bpp": args.bpp, "effort": args.effort}, timeout=120,
                           content=data, headers={"content-type": "image/jpeg"})
            r.raise_for_status()
            job = r.json()["job_id"]
            while httpx.get(f"{base}/v1/jobs/{job}").json()["status"] != "running":
                time.sleep(0.2)
            time.sleep(args.after)
            before = httpx.get(f"{base}/v1/jobs/{job}").json()
            asked = time.monotonic()
            httpx.delete(f"{base}/v1/jobs/{job}").raise_for_status()
            while (state := httpx.get(f"{base}/v1/jobs/{job}").json())["status"] in ("queued", "running"):
                time.sleep(0.1)
            took = time.monotonic() - asked
            report = {"size": [w, h], "upload_bytes": len(data), "bpp": args.bpp, "effort": args.effort,
                      "cancelled_after_s": args.after, "progress_at_cancel": before["progress"],
                      "step_at_cancel": before["step"], "status": state["status"], "cancel_took_s": round(took, 2),
                      "worker_peak_rss_mib": round(_peak_kib(worker.pid) / 1024, 1)}
        finally:
            for p in (worker, api):
                p.terminate()
            for p in (worker, api):
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
