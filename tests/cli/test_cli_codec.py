"""The CLI on real files: `tuner encode --bpp` keeps its promise on the 192x128 sample, `tuner info`
reports the PSNR that decoding gives, and bad blobs end in one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import sample_path
from tuner_cli.main import main
from tuner_model.codec import decode_blob
from tuner_model.core.image_io import load_image
from tuner_model.render.fitted import measure_psnr

CLI = [sys.executable, "-m", "tuner_cli"]


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def blob_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "parrots.tnr"
    r = run("encode", str(sample_path("parrots-192x128.png")), "-o", str(out), "--bpp", "1.0",
            "--steps", "25", "--device", "cpu", timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_encode_at_1bpp_writes_at_most_1bpp(blob_path: Path) -> None:
    assert 8 * blob_path.stat().st_size <= 192 * 128


def test_info_reports_the_psnr_decoding_gives(blob_path: Path) -> None:
    r = run("info", str(blob_path))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["bpp"] <= 1.0 and info["width"] == 192
    image = load_image(sample_path("parrots-192x128.png"))
    assert info["psnr"] == pytest.approx(measure_psnr(decode_blob(blob_path.read_bytes()), image), abs=1e-4)


def _bad_files(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    return {"empty": b"", "truncated": good[: len(good) // 2], "flipped": bytes(flipped),
            "random": os.urandom(500), "foreign": sample_path("parrots-96x64.png").read_bytes()}


@pytest.mark.parametrize("kind", ["empty", "truncated", "flipped", "random", "foreign"])
@pytest.mark.parametrize("command", ["info", "decode"])
def test_bad_blobs_fail_in_one_line(blob_path: Path, tmp_path: Path, kind: str, command: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # In-process (an unexpected exception would escape main() and fail the test): a process per case
    # would spend most of the suite's time importing torch.
    bad = tmp_path / f"{kind}.tnr"
    bad.write_bytes(_bad_files(blob_path.read_bytes())[kind])
    args = [command, str(bad)] + (["-o", str(tmp_path / "out.png")] if command == "decode" else [])
    assert main(args) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("tuner: error:")
    assert not (tmp_path / "out.png").exists()


def test_a_bad_blob_in_a_real_process(blob_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tnr"
    bad.write_bytes(blob_path.read_bytes()[:-3])
    r = run("decode", str(bad), "-o", str(tmp_path / "out.png"), timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["tuner: error: blob checksum mismatch (truncated or corrupted)"]
