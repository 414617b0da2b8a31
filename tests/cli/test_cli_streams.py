"""The `tuner` command in pipelines: --version, `-` for standard input and output, no traceback when the
reader goes away (`| head`), and options checked before any work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TUNER = Path(sys.executable).with_name("tuner")
CMD = [str(TUNER)] if TUNER.exists() else [sys.executable, "-m", "tuner_cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], input=stdin, capture_output=True, timeout=240, env=ENV)


def no_traceback(p: subprocess.CompletedProcess) -> None:
    err = p.stderr.decode(errors="replace")
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.fixture(scope="module")
def blob_path(tmp_path_factory: pytest.TempPathFactory, parrots: np.ndarray) -> Path:
    from tuner_model.rate.encode import encode
    from tuner_model.rate.request import EncodeSettings

    path = tmp_path_factory.mktemp("streams") / "p.tnr"
    path.write_bytes(encode(parrots, EncodeSettings(steps=20, device="cpu", effort=1))[1])
    return path


def test_version() -> None:
    from importlib.metadata import version

    p = run("--version")
    assert p.returncode == 0
    installed = version("tuner-service")
    assert p.stdout.decode().strip() == f"tuner {installed} (blob format 2; 4 for an image fitted as tiles)"


def test_decode_to_stdout_into_head(blob_path: Path) -> None:
    """`tuner decode x.tnr -o - | head -c 8`: the PNG signature, and no traceback though head leaves early
    (a 1536-pixel-wide PNG is far more than a pipe holds)."""
    shell = f"{' '.join(CMD)} decode {blob_path} -o - --width 1536 | head -c 8; echo \" ${{PIPESTATUS[0]}}\" >&2"
    p = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=240, env=ENV)
    assert p.stdout == b"\x89PNG\r\n\x1a\n"
    no_traceback(p)
    assert p.stderr.decode().split()[-1] in ("0", "141")  # 141: it saw the pipe close, quietly


def test_info_into_a_closed_pipe(blob_path: Path) -> None:
    """`tuner info x.tnr | head -0`: the reader has gone before anything is written."""
    proc = subprocess.Popen([*CMD, "info", str(blob_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ENV)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 141


def test_stdin_and_stdout(blob_path: Path, parrots_path: Path, tmp_path: Path) -> None:
    import io
    import json

    from PIL import Image

    info = run("info", "-", stdin=blob_path.read_bytes())
    assert info.returncode == 0 and json.loads(info.stdout)["width"] == 96
    webp = run("decode", "-", "-o", "-", "--format", "WEBP", "--width", "48", stdin=blob_path.read_bytes())
    assert webp.returncode == 0, webp.stderr
    assert Image.open(io.BytesIO(webp.stdout)).format == "WEBP" and Image.open(io.BytesIO(webp.stdout)).size == (48, 32)
    assert json.loads(webp.stderr.decode().strip().splitlines()[-1])["width"] == 48  # the summary: on stderr
    jpg = run("decode", str(blob_path), "-o", str(tmp_path / "out.png"), "--format", "jpg")
    assert jpg.returncode == 0 and Image.open(tmp_path / "out.png").format == "JPEG"  # --format wins
    blob = run("encode", "-", "-o", "-", "--steps", "5", "--effort", "1", "--device", "cpu",
               stdin=parrots_path.read_bytes())
    assert blob.returncode == 0, blob.stderr
    assert json.loads(run("info", "-", stdin=blob.stdout).stdout)["height"] == 64


def _one_line_failure(p: subprocess.CompletedProcess, word: str) -> None:
    assert p.returncode != 0
    no_traceback(p)
    lines = [ln for ln in p.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0], lines


def test_options_are_checked_before_any_work(blob_path: Path, parrots_path: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    _one_line_failure(run("decode", str(blob_path), "-o", str(tmp_path / "x.png"), "--quality", "200"), "1..100")
    assert time.monotonic() - t0 < 20  # argparse's answer: nothing rendered
    _one_line_failure(run("decode", str(blob_path), "-o", str(tmp_path / "x.png"), "--format", "gif"), "gif")
    # Each answer names the option, not what a later step would have met (a missing input is read later).
    missing = str(tmp_path / "missing.tnr")
    _one_line_failure(run("decode", missing, "-o", str(tmp_path / "x.png"), "--crop", "0.5", "0", "0.2", "1"), "crop")
    _one_line_failure(run("decode", missing, "-o", str(tmp_path / "x.gif")), "extension")
    _one_line_failure(run("decode", missing, "-o", str(tmp_path / "no" / "x.png")), "cannot write")
    # An encode checks where it writes before it fits (not after minutes of fitting).
    _one_line_failure(run("encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "no" / "x.tnr")),
                      "cannot write")
    _one_line_failure(run("encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.tnr"), "--bpp", "1",
                          "--psnr", "30"), "psnr")


def test_time_limit_message_suggests_only_what_can_go_down() -> None:
    from service.estimate import job_plan, over_time_limit
    from service.settings import Settings
    from tuner_model.rate.request import EncodeRequest

    tight = Settings(soft_time_limit_s=1, hard_time_limit_s=2)
    at_one = over_time_limit(job_plan(EncodeRequest(effort=1), 768, 512, 3, tight), tight)
    assert at_one is not None and "effort" not in at_one and "lower the bpp" in at_one
    at_four = over_time_limit(job_plan(EncodeRequest(effort=4, psnr=30), 768, 512, 3, tight), tight)
    assert at_four is not None and "effort" not in at_four and "lower the psnr target" in at_four
    # where a lower effort would fit, the message names it (the highest that does)
    some = Settings(soft_time_limit_s=1000, hard_time_limit_s=1100)
    refused = over_time_limit(job_plan(EncodeRequest(effort=4), 768, 512, 3, some), some)
    named = re.search(r"effort (\d) would take about", refused or "")
    assert named is not None and int(named.group(1)) < 4, refused
    effort = int(named.group(1))
    assert over_time_limit(job_plan(EncodeRequest(effort=effort), 768, 512, 3, some), some) is None
    assert over_time_limit(job_plan(EncodeRequest(effort=effort + 1), 768, 512, 3, some), some) is not None


def test_tuner_sign_mints_urls_the_service_accepts() -> None:
    """The service refuses signed URLs without an expiry or valid too long (issue 24, item 12): `tuner sign`
    gives every URL the service's default expiry, and refuses to mint one the service would refuse."""
    from urllib.parse import parse_qsl, urlsplit

    from service.access.signing import parse_keys, verify
    from service.settings import Settings

    key = "a-signing-key-0123456789"
    env = {**os.environ, "TUNER_SIGNING_KEYS": key, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([str(TUNER), "sign", "/v1/images/abc/render?width=64"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    url = urlsplit(p.stdout.strip())
    verify(url.path, parse_qsl(url.query), parse_keys(key), max_ttl=Settings().signed_url_max_ttl_s)
    too_long = str(Settings().signed_url_max_ttl_s + 1)
    p = subprocess.run([str(TUNER), "sign", "/v1/images/abc/render?width=64", "--expires-in", too_long],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "TUNER_SIGNED_URL_MAX_TTL_S" in p.stderr
