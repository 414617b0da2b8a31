"""The `tuner` command line as a user runs it: a real console-script subprocess."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

TUNER = [str(Path(sys.executable).with_name("tuner"))] if Path(sys.executable).with_name("tuner").exists() else [
    sys.executable, "-m", "tuner_cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*TUNER, *args], capture_output=True, text=True, timeout=240, cwd=cwd, env=env)


def assert_clean_failure(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, parrots_path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "parrots.blob"
    p = run("encode", str(parrots_path), "-o", str(out), "--steps", "300", "--device", "cpu", "--effort", "3")
    assert p.returncode == 0, p.stderr
    return out


def test_encode_decode_native_quality(encoded, tmp_path, parrots):
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr

    p = run("decode", str(encoded), "-o", str(tmp_path / "native.png"))
    assert p.returncode == 0, p.stderr
    native = load_image(tmp_path / "native.png")
    assert native.shape == parrots.shape
    assert psnr(native, parrots) >= 26.0


def test_decode_twice_the_width_keeps_aspect(encoded, tmp_path):
    for ext in ("png", "webp", "jpg"):
        out = tmp_path / f"big.{ext}"
        p = run("decode", str(encoded), "-o", str(out), "--width", "192")
        assert p.returncode == 0, p.stderr
        with Image.open(out) as im:
            assert im.size == (192, 128)
            assert im.format == {"png": "PNG", "webp": "WEBP", "jpg": "JPEG"}[ext]


def test_info_reports_what_decoding_gives(encoded, tmp_path, parrots):
    from tuner_model.core.image_io import load_image
    from tuner_model.core.metrics import psnr

    p = run("info", str(encoded))
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    for key in ("width", "height", "bytes", "bpp", "psnr", "model"):
        assert key in info
    assert (info["width"], info["height"]) == (96, 64)
    assert info["bytes"] == encoded.stat().st_size
    assert info["bpp"] == pytest.approx(8 * info["bytes"] / (96 * 64), rel=1e-3)
    run("decode", str(encoded), "-o", str(tmp_path / "n.png"))
    # The stored PSNR is of the float render; an 8-bit PNG loses at most a little.
    assert psnr(load_image(tmp_path / "n.png"), parrots) == pytest.approx(info["psnr"], abs=0.15)


def _bomb_png(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w×h pixels (and whose data is tiny): a decompression bomb."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def test_bad_inputs_fail_with_one_line(tmp_path, parrots_path, encoded):
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(parrots_path.read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    bomb = tmp_path / "bomb.png"
    _bomb_png(bomb, 60000, 60000)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = str(tmp_path / "o.blob")
    cases = [
        (("encode", str(tmp_path / "missing.png"), "-o", out), "no such file"),
        (("encode", str(truncated), "-o", out, "--steps", "5"), "trunc.png"),
        (("encode", str(text), "-o", out), "not an image"),
        (("encode", str(bomb), "-o", out), "too large"),
        (("encode", str(empty), "-o", out), "empty.png"),
        (("encode", str(tmp_path), "-o", out), "directory"),
        (("encode", str(parrots_path), "-o", out, "--steps", "0"), "positive"),
        (("encode", str(parrots_path), "-o", out, "--steps", "-5"), "positive"),
        (("encode", str(parrots_path), "-o", out, "--effort", "0"), "1..9"),
        (("encode", str(parrots_path), "-o", out, "--effort", "10"), "1..9"),
        (("encode", str(parrots_path), "-o", out, "--effort", "fast"), "not an integer"),
        (("decode", str(encoded), "-o", str(tmp_path / "x.png"), "--width", "0"), "positive"),
        (("decode", str(encoded), "-o", str(tmp_path / "x.png"), "--height", "-2"), "positive"),
        (("decode", str(encoded), "-o", str(tmp_path / "x.gif")), "extension"),
        (("decode", str(encoded), "-o", str(tmp_path / "x.png"), "--width", "100000", "--height", "100000"), "limit"),
        (("decode", str(encoded), "-o", str(tmp_path / "x.png"), "--crop", "0.5", "0", "0.2", "1"), "crop"),
        (("decode", str(tmp_path / "missing.blob"), "-o", str(tmp_path / "x.png")), "no such file"),
        (("decode", str(parrots_path), "-o", str(tmp_path / "x.png")), "blob"),
        (("info", str(empty)), "blob"),
        (("encode", str(parrots_path), "-o", str(tmp_path / "no" / "dir" / "o.blob"), "--steps", "2"), "cannot write"),
    ]
    for args, word in cases:
        assert_clean_failure(run(*args), word)


def test_readme_first_command_paths_exist():
    """The README's first command names the shipped sample; it must be in the repo."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert "tuner_model/samples/parrots-96x64.png" in readme or "tuner serve" in readme
    assert (root / "tuner_model/samples/parrots-96x64.png").exists()
    assert shutil.which("tuner") or Path(sys.executable).with_name("tuner").exists()


def test_run_progress_counts_encodes_and_estimates_the_rest():
    import io

    from tuner_cli.progress import RunProgress

    log = io.StringIO()  # not a terminal: a line at most every `every` seconds, and at each encode's end
    bar = RunProgress(log, every=3600.0)
    bar(4, 12, "k.png 0.5 bpp", 0.0)  # 4 finished by an earlier run
    bar.start -= 100.0  # this process has spent 100 s on half an encode
    bar(4, 12, "k.png 0.5 bpp", 0.5)  # within `every` of the last line: not written
    bar(4, 12, "k.png 0.5 bpp", 1.0)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "4/12 encodes" in lines[0] and "ETA --" in lines[0], lines
    # one encode in 100 s, 7 to go after this one
    assert "k.png 0.5 bpp 100%" in lines[1] and "ETA 11m40s" in lines[1], lines


def test_progress_bar_shows_the_time_left(capsys):
    from tuner_cli.progress import ProgressBar, eta_text
    from tuner_model.core.progress import Progress

    assert eta_text(1.0, 0.0) == "--" and eta_text(1.0, 0.01) == "--"  # too early to tell
    assert eta_text(3.0, 0.01) == "4m57s" and eta_text(10.0, 0.5) == "10s" and eta_text(10.0, 1.0) == "0s"
    assert eta_text(3700.0, 0.5) == "1h01m"  # an hour or more in hours and minutes
    bar = ProgressBar(enabled=True)
    bar.start -= 10.0  # as if the encode began 10 s ago
    bar(Progress("fit", 250, 1000, 0.003, 25.0))
    line = capsys.readouterr().err
    assert "250/1000" in line and "ETA    30s" in line, line


def test_latent_prototype_behind_its_flag(tmp_path: Path, parrots_path) -> None:
    blob = tmp_path / "parrots-latent.tnr"
    p = run("encode", str(parrots_path), "-o", str(blob), "--model", "latent", "--steps", "60", "--lambda", "0.002")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["model"] == "latent" and summary["bytes"] == blob.stat().st_size
    info = json.loads(run("info", str(blob)).stdout)
    assert info["model"]["kind"] == "latent" and (info["width"], info["height"]) == (96, 64)
    assert info["macs_per_pixel"] <= 3000
    out = tmp_path / "big.png"
    p = run("decode", str(blob), "-o", str(out), "--width", "192")
    assert p.returncode == 0, p.stderr
    assert Image.open(out).size == (192, 128)
    assert_clean_failure(run("encode", str(parrots_path), "-o", str(blob), "--model", "latent", "--bpp", "1"),
                         "--lambda")
    assert_clean_failure(run("encode", str(parrots_path), "-o", str(blob), "--lambda", "0.01"), "--model latent")
