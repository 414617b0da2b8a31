"""Issue 24, item 2: the API reads an upload's header, never its pixels. Six concurrent uploads of a
4000x4000 PNG (46 KB each, all zeros: 192 MB of float32 apiece if decoded) to a real `tuner api` process
raise its peak RSS (VmHWM, reset after warm-up) by less than 100 MB, and each is accepted (as tiles, issue 28;
the same bytes once, the others deduplicated) without the API decoding it."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_service_e2e import FAST, Proc, free_port, wait_ready

from tuner_model.core.tiling import tile_grid

MB = 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_six_concurrent_big_png_uploads_stay_under_100_mb(tmp_path: Path, parrots_path: Path) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc")
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000)).save(buf, "PNG")
    bomb = buf.getvalue()
    assert len(bomb) < 100_000
    env = {**FAST, "TUNER_DATA_DIR": str(tmp_path / "data"), "TUNER_RATE_LIMIT_PER_S": "0"}
    port = free_port()
    api = Proc(["api", "--port", str(port)], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        # Warm up every code path the uploads take (imports, the thread pool), then measure from here.
        warm = httpx.post(f"{base}/v1/images", params={"steps": 30}, content=parrots_path.read_bytes(),
                          headers={"content-type": "image/png"}, timeout=30)
        assert warm.status_code == 202, warm.text
        pid = api.p.pid
        idle = _status_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: httpx.post(
                f"{base}/v1/images", content=bomb, headers={"content-type": "image/png"}, timeout=60), range(6)))
        peak = _status_kb(pid, "VmHWM")
        print(f"API RSS: idle {idle / 1024:.0f} MB, peak under 6 uploads {peak / 1024:.0f} MB")  # for -s runs
        assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
        assert all(r.json()["tiles"] == tile_grid(4000, 4000).count > 1 for r in answers)
        assert (peak - idle) * 1024 < 100 * MB, f"peak {peak / 1024:.0f} MB, idle {idle / 1024:.0f} MB"
    finally:
        api.stop()
