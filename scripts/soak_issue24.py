#!/usr/bin/env python3
"""Issue 24's soak: for a bounded time (default 10 minutes), on loopback only, four tenants upload, render,
delete and re-upload the same bytes concurrently against a real `tuner api` and `tuner worker` on Redis,
while the worker is SIGKILLed and restarted twice. Then: no 5xx was answered, every succeeded image renders
for its tenant, no tenant saw another's image, and after a final sweep every stored blob, upload and render
belongs to a record. Writes a log (stdout and --log).

    .venv/bin/python scripts/soak_issue24.py --minutes 10 --log docs/results/soak-issue24.log
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.access.keys import create_key  # noqa: E402
from service.api.render import render_prefix  # noqa: E402
from service.records import Database  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.storage import LocalBlobStore  # noqa: E402
from service.sweeper import Sweeper  # noqa: E402
from tuner_model.core.image_io import load_image  # noqa: E402

TENANTS = ("t1", "t2", "t3", "t4")
LOG: list[str] = []
LOCK = threading.Lock()


def log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    with LOCK:
        LOG.append(line)
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crops() -> list[bytes]:
    pixels = load_image(ROOT / "tuner_model" / "samples" / "parrots-96x64.png")
    out = []
    for r, c in ((0, 0), (32, 48), (16, 24)):
        buf = io.BytesIO()
        Image.fromarray(np.round(pixels[r:r + 32, c:c + 48] * 255).astype(np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


class Stats:
    def __init__(self) -> None:
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []
        self.leaks = 0
        self.renders = 0
        self.cycles = 0

    def saw(self, r: httpx.Response, what: str) -> httpx.Response:
        with LOCK:
            self.codes[r.status_code] += 1
            if r.status_code >= 500:
                self.errors.append(f"{what}: {r.status_code} {r.text[:200]}")
        return r


def tenant_loop(base: str, tenant: str, auth: dict[str, dict[str, str]], pngs: list[bytes], deadline: float,
                stats: Stats, seen_ids: dict[str, set[str]]) -> None:
    rng = random.Random(tenant)
    h = auth[tenant]
    with httpx.Client(base_url=base, timeout=60) as c:
        while time.monotonic() < deadline:
            png = rng.choice(pngs)
            r = stats.saw(c.post("/v1/images", params={"steps": 20}, content=png,
                                 headers={"content-type": "image/png", **h}), "upload")
            if r.status_code != 202:
                time.sleep(1)
                continue
            job, image = r.json()["job_id"], r.json()["image_id"]
            with LOCK:
                seen_ids[tenant].add(image)
            status = "queued"
            while time.monotonic() < deadline + 120 and status in ("queued", "running"):
                time.sleep(0.5)
                status = stats.saw(c.get(f"/v1/jobs/{job}", headers=h), "job").json().get("status", "?")
            if status != "succeeded":
                continue
            for _ in range(2):
                w = stats.saw(c.get(f"/v1/images/{image}/render", params={"width": rng.randint(16, 96)}, headers=h),
                              "render")
                if w.status_code == 200:
                    with LOCK:
                        stats.renders += 1
                elif w.status_code != 404:  # 404: deleted by a racing delete of our own (not another tenant)
                    stats.errors.append(f"render {image}: {w.status_code}")
            other = rng.choice([t for t in TENANTS if t != tenant])
            with LOCK:
                theirs = list(seen_ids[other])
            if theirs:  # another tenant's id: never visible
                probe = stats.saw(c.get(f"/v1/images/{rng.choice(theirs)}", headers=h), "probe")
                if probe.status_code != 404:
                    with LOCK:
                        stats.leaks += 1
            if rng.random() < 0.6:
                stats.saw(c.delete(f"/v1/images/{image}", headers=h), "delete")
            with LOCK:
                stats.cycles += 1


def start(args: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen:
    fh = open(logfile, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "tuner_cli", *args], env={**os.environ, **env}, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--log", default=None)
    a = ap.parse_args()
    import redis

    redis.Redis.from_url(a.redis).flushdb()
    work = Path(tempfile.mkdtemp(prefix="soak24-"))
    data = work / "data"
    data.mkdir()
    env = {"TUNER_BROKER_URL": a.redis, "TUNER_DATA_DIR": str(data), "TUNER_COMPARISONS": "0",
           "TUNER_HEARTBEAT_S": "1", "TUNER_STALE_AFTER_S": "6", "TUNER_RECOVERY_INTERVAL_S": "1",
           "TUNER_RATE_LIMIT_PER_S": "0", "TUNER_FIT_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "TUNER_RENDER_COMPILE": "0", "TUNER_MAX_PENDING_JOBS_PER_TENANT": "4"}
    db = Database(Settings(data_dir=data).resolved_database_url)
    auth = {t: {"Authorization": f"Bearer {create_key(db, t)[1]}"} for t in TENANTS}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start(["api", "--port", str(port)], env, work / "api.log")
    worker = start(["worker", "--concurrency", "1"], env, work / "worker.log")
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    log(f"soak: {a.minutes:g} min, 4 tenants, API {base}, worker pid {worker.pid}, data {data}")
    stats, seen = Stats(), {t: set() for t in TENANTS}
    deadline = time.monotonic() + a.minutes * 60
    pngs = crops()
    threads = [threading.Thread(target=tenant_loop, args=(base, t, auth, pngs, deadline, stats, seen)) for t in TENANTS]
    for t in threads:
        t.start()
    for frac in (0.3, 0.6):  # kill the worker (and its fitting child) twice, restart it 5 s later
        time.sleep(max(0.0, deadline - a.minutes * 60 * (1 - frac) - time.monotonic()))
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        log(f"worker SIGKILLed at {frac:.0%} of the run (cycles so far {stats.cycles})")
        time.sleep(5)
        worker = start(["worker", "--concurrency", "1"], env, work / "worker.log")
        log(f"worker restarted: pid {worker.pid}")
    for t in threads:
        t.join()
    log(f"loop over: {stats.cycles} cycles, {stats.renders} renders, answers {dict(sorted(stats.codes.items()))}")

    # Every succeeded image renders for its tenant.
    bad_renders = 0
    with db.session() as s:
        from sqlalchemy import select

        from service.records import Image as ImageRow
        images = list(s.scalars(select(ImageRow)))
    for img in images:
        r = httpx.get(f"{base}/v1/images/{img.id}/render", params={"width": 24}, headers=auth[img.tenant], timeout=60)
        bad_renders += r.status_code != 200
    log(f"final: {len(images)} images stored, {bad_renders} that don't render")

    # The final sweep (grace 0), then: every file belongs to a record.
    settings = Settings(data_dir=data, orphan_grace_s=1e-3, upload_retention_s=1e-3)
    store = LocalBlobStore(data / "blobs")
    time.sleep(0.1)
    swept = Sweeper(settings, store, db).sweep_once()
    blobs = {b.key.split("/")[1] for b in store.list("blobs")}
    referenced = db.referenced_blobs()
    uploads = {b.key.split("/")[1] for b in store.list("uploads")}
    active = db.active_upload_digests()
    prefixes = {render_prefix(i.id) for i in images}
    stray_renders = [b.key for b in store.list("renders") if b.key.split("/")[1][:16] not in prefixes]
    temp = [p for p in (data / "blobs").rglob(".*") if p.is_file()]
    log(f"sweep: {swept}; blobs {len(blobs)} (unreferenced {len(blobs - referenced)}, missing "
        f"{len(referenced - blobs)}), uploads {len(uploads)} (not needed by an active job {len(uploads - active)}), "
        f"stray renders {len(stray_renders)}, temporary files {len(temp)}")
    log(f"5xx answers: {sum(n for c, n in stats.codes.items() if c >= 500)}; errors: {stats.errors[:10]}; "
        f"cross-tenant reads that did not answer 404: {stats.leaks}")
    ok = (not stats.errors and stats.leaks == 0 and bad_renders == 0 and not (blobs - referenced)
          and not (referenced - blobs) and not (uploads - active) and not stray_renders and not temp)
    log("RESULT: " + ("PASS" if ok else "FAIL"))
    for p in (api, worker):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    if a.log:
        Path(a.log).write_text("\n".join(LOG) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
