"""`tuner bench rd` end to end on a tiny image: our point, the classical codecs at our bpp, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner_cli.main import main
from tuner_model.bench.rd import interpolate


def test_interpolate_is_log_linear_and_refuses_to_extrapolate() -> None:
    curve = [(0.25, 20.0, 0.5), (1.0, 30.0, 0.9)]
    assert interpolate(curve, 0.5) == pytest.approx((25.0, 0.7))
    assert interpolate(curve, 2.0) == (None, None)


def test_bench_rd_cli(tmp_path: Path, image_dir: Path) -> None:
    out = tmp_path / "rd.json"
    assert main(["bench", "rd", "--images", str(image_dir), "--bpp", "3.0", "--steps", "15", "--size", "48x32",
                 "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    row = report["images"][0]["rows"][0]
    assert 0 < row["bpp"] <= 3.0 and row["psnr"] > 10 and 0 < row["ssim"] <= 1
    assert abs(row["info_psnr"] - row["psnr"]) < 1e-3  # decoding gives what `tuner info` reports
    assert row["cpu"] and "threads" in row["cpu"]  # the machine its seconds were measured on
    assert row["webp_psnr"] is not None  # WebP's sweep covers 3 bpp even on a tiny image
    assert report["mean"][0]["psnr"] == pytest.approx(row["psnr"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rd_resumes_and_takes_an_effort(tmp_path: Path, image_dir: Path, capsys) -> None:
    """A stopped run continues after its finished encodes (and its progress counts them); another effort is
    another run."""
    out, results = tmp_path / "rd.json", tmp_path / "rd-runs.json"
    args = ["bench", "rd", "--images", str(image_dir), "--size", "48x32", "--device", "cpu", "--effort", "1",
            "--json", str(out), "--results", str(results)]
    assert main([*args, "--bpp", "2.0"]) == 0
    err = capsys.readouterr().err
    assert "] 0/1 encodes  a.png 2.0 bpp   0%" in err and "0/1 encodes  a.png 2.0 bpp 100%" in err, err
    first = json.loads(out.read_text())
    assert first["effort"] == 1 and first["steps"] is None
    assert set(json.loads(results.read_text())["rows"]) == {"a.png@2.0"}
    assert main([*args, "--bpp", "2.0,3.0"]) == 0  # one more rate: only that one is encoded
    assert "1/2 encodes  a.png 3.0 bpp 100%" in capsys.readouterr().err
    again = json.loads(out.read_text())
    assert again["images"][0]["rows"][0] == first["images"][0]["rows"][0]  # the same measurement, kept
    assert len(again["images"][0]["rows"]) == 2
    with pytest.raises(SystemExit):
        main([*args, "--effort", "10"])


def test_means_only_over_every_image() -> None:
    from tuner_model.bench.rd import mean_rows

    rows = [{"image": "a", "rows": [{"target_bpp": 0.5, "psnr": 20.0, "webp_psnr": None, "jpeg_psnr": 21.0,
                                     "cpu": "X, 2 threads, AVX2"}]},
            {"image": "b", "rows": [{"target_bpp": 0.5, "psnr": 22.0, "webp_psnr": 30.0, "jpeg_psnr": 23.0}]}]
    m = mean_rows(rows, [0.5])[0]
    assert m["psnr"] == 21.0 and m["jpeg_psnr"] == 22.0
    assert m["cpus"] == ["X, 2 threads, AVX2"]  # the machines, listed, not averaged (b's older row has none)
    assert m["webp_psnr"] is None  # not 30.0: a mean over image b alone is not comparable with ours
