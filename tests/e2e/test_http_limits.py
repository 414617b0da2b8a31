"""Issue 24, items 8 and 10, against a real `tuner api` process (the uvicorn configuration `tuner api` and
`tuner serve` run): half-sent headers and a trickled body no longer hold a connection; wrong keys from one
address turn into 429; a short bootstrap key is refused at start; X-Forwarded-For is believed only from a
proxy named in TUNER_TRUSTED_PROXIES."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_service_e2e import FAST, Proc, free_port, wait_ready

BOOT = "tnr_bootstrap-key-for-limits-test"


def _api(tmp_path: Path, name: str, **env: str) -> tuple[str, Proc]:
    port = free_port()
    proc = Proc(["api", "--port", str(port)], {**FAST, "TUNER_DATA_DIR": str(tmp_path / name), **env},
                tmp_path / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc)
    return base, proc


def test_slow_clients_and_wrong_keys(tmp_path: Path) -> None:
    base, api = _api(tmp_path, "limits", TUNER_BOOTSTRAP_KEY=BOOT, TUNER_HTTP_HEADER_TIMEOUT_S="1",
                     TUNER_HTTP_BODY_TIMEOUT_S="2", TUNER_AUTH_FAILURES_PER_MINUTE="3", TUNER_RATE_LIMIT_PER_S="0")
    port = int(base.rsplit(":", 1)[1])
    try:
        # Half-sent headers: the server closes the connection after the header timeout (it waited for ever).
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            s.settimeout(10)
            started = time.monotonic()
            assert s.recv(100) == b""
            assert time.monotonic() - started < 5

        # A body trickled a byte at a time: 408 once the body deadline passes.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"POST /v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {BOOT}\r\n"
                      "Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n".encode())
            s.settimeout(0.5)
            started, answer = time.monotonic(), b""
            while time.monotonic() - started < 10 and not answer:
                s.sendall(b"\x89")
                try:
                    answer = s.recv(200)
                except TimeoutError:
                    continue
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - started < 6

        # Wrong keys: 401 three times, then 429 for this address (the right key still works).
        codes = [httpx.get(f"{base}/v1/images", headers={"Authorization": "Bearer tnr_wrong"}).status_code
                 for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        assert httpx.get(f"{base}/v1/images", headers={"Authorization": f"Bearer {BOOT}"}).status_code == 200
    finally:
        api.stop()


def test_short_bootstrap_key_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "tuner_cli", "api", "--port", str(free_port())],
                       env={**FAST, "TUNER_DATA_DIR": str(tmp_path), "TUNER_BOOTSTRAP_KEY": "abc",
                            "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "at least 16 characters" in r.stderr


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_forwarded_for_only_from_trusted_proxies(tmp_path: Path, trusted: str) -> None:
    base, api = _api(tmp_path, f"proxy{bool(trusted)}", TUNER_RATE_LIMIT_PER_S="0.01", TUNER_RATE_LIMIT_BURST="2",
                     **({"TUNER_TRUSTED_PROXIES": trusted} if trusted else {}))
    try:
        codes = [httpx.get(f"{base}/v1/images", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(4)]
        if trusted:  # the proxy is believed: four clients, four buckets
            assert codes == [200, 200, 200, 200]
        else:  # a spoofed header from an unnamed peer is ignored: one client, one bucket of 2
            assert codes == [200, 200, 429, 429]
    finally:
        api.stop()
