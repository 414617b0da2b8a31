"""Issue 28 end to end: real `tuner api` and two `tuner worker` processes on real Redis, the working size
lowered so that the 96x64 sample is fitted as 2 x 2 tiles.

- The 202 says how many tiles and when to expect the blob; the tiles run on both workers; one worker is
  SIGKILLed while fitting a tile, and only that tile is fitted again (the task logs show each tile's claims);
  the job succeeds with one version-4 blob, which renders.
- Cancelling a running tiled job stops every tile on every worker within seconds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import FAST, Proc, api_and_workers, wait_job

TILED = {**FAST, "TUNER_TILE_WORKING_SIZE": "[56, 40]", "TUNER_COMPARISONS": "false", "TUNER_FIT_THREADS": "1",
         "TUNER_RESEND_QUEUED_AFTER_S": "600"}
CLAIM = re.compile(r"job (job_[0-9a-f]+): tile (\d+) claimed by")


@pytest.fixture()
def stack(redis_url: str, tmp_path: Path):
    with api_and_workers(redis_url, tmp_path, TILED) as running:
        yield running


def _upload(base: str, parrots_path: Path, steps: int) -> dict:
    r = httpx.post(f"{base}/v1/images", params={"steps": steps, "effort": 1}, timeout=30,
                   files={"file": ("p.png", parrots_path.read_bytes(), "image/png")})
    assert r.status_code == 202, r.text
    return r.json()


def _claims(procs: list[Proc], job_id: str) -> list[list[int]]:
    return [[int(k) for j, k in CLAIM.findall(_log(p)) if j == job_id] for p in procs]


def _log(p: Proc) -> str:
    return p.log.read_text(errors="replace")


def _wait_claims(procs: list[Proc], job_id: str, until, timeout: float = 60) -> list[list[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claims = _claims(procs, job_id)
        if until(claims):
            return claims
        time.sleep(0.2)
    pytest.fail(f"tiles of {job_id} not claimed as expected: {_claims(procs, job_id)}")


def test_tiles_run_on_both_workers_and_a_killed_workers_tile_alone_runs_again(stack, parrots_path: Path) -> None:
    base, start = stack
    workers = [start("worker", name="worker-a"), start("worker", name="worker-b")]
    accepted = _upload(base, parrots_path, 1500)
    assert accepted["tiles"] == 4 and accepted["eta_s"] > 0, accepted
    job_id = accepted["job_id"]
    # each worker is fitting a tile; kill the first while it does
    claims = _wait_claims(workers, job_id, lambda c: all(c))
    lost = claims[0][-1]
    workers[0].kill()
    final = wait_job(base, job_id, timeout=240)[-1]
    assert final["status"] == "succeeded", final
    claims = _claims(workers, job_id)
    every = sorted(claims[0] + claims[1])
    # the killed worker's tile was claimed twice, each other tile once
    assert every == sorted([0, 1, 2, 3, lost]), claims
    assert lost in claims[1]
    img = httpx.get(f"{base}/v1/images/{final['image_id']}").json()
    assert (img["width"], img["height"]) == (96, 64)
    r = httpx.get(f"{base}/v1/images/{final['image_id']}/render", params={"width": 192}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_cancelling_a_tiled_job_stops_every_tile(stack, parrots_path: Path) -> None:
    base, start = stack
    workers = [start("worker", name="worker-a"), start("worker", name="worker-b")]
    job_id = _upload(base, parrots_path, 20000)["job_id"]
    _wait_claims(workers, job_id, lambda c: all(c))
    t0 = time.monotonic()
    assert httpx.delete(f"{base}/v1/jobs/{job_id}").status_code == 202
    final = wait_job(base, job_id, timeout=30)[-1]
    assert final["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every tile that was running says it stopped
        stopped = [re.search(rf"job {job_id}: tile \d+ stopped", _log(w)) is not None for w in workers]
        if all(stopped):
            break
        time.sleep(0.2)
    assert all(stopped), [w.tail()[-2000:] for w in workers]
    assert time.monotonic() - t0 < 30
    assert sum(len(c) for c in _claims(workers, job_id)) == 2  # the queued tiles were never fitted
