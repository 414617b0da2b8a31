"""`tuner bench speed` end to end on the CPU with tiny settings: the report has every part, the baseline
is measured beside the fast paths, what cannot run here is recorded as skipped, bad input is one line."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from tuner_cli.main import main


def sample_path(name: str) -> Path:
    return Path(str(resources.files("tuner_model") / "samples" / name))


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("parrots-96x64.png", "caps-96x64.png"):
        shutil.copy(sample_path(name), d / name)
    return d


def test_speed_bench_cpu_report(image_dir, tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc = main(["bench", "speed", "--images", str(image_dir), "--device", "cpu", "--json", str(out),
               "--widths", "8,16", "--steps", "2", "--warmup", "1", "--sizes", "48x32,300x200",
               "--direct-sizes", "300x200", "--render-steps", "3", "--batch", "2", "--repeats", "1",
               "--reference-steps", "20", "--efforts", "1", "--results", str(tmp_path / "ref.json")])
    assert rc == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out)["device"] == "cpu"
    fit = report["fit"]
    assert [(r["width"], r["variant"]) for r in fit] == [
        (w, v) for w in (8, 16) for v in ("fp32-eager", "grid", "grid-eager-top")]
    for w in (8, 16):  # the native and the eager top layer: the same steps, the same network
        native, eager = (next(r for r in fit if r["width"] == w and r["variant"] == v)
                         for v in ("grid", "grid-eager-top"))
        assert native["psnr"] == pytest.approx(eager["psnr"], abs=0.01)
    assert all(r["ms_per_step"] > 0 for r in fit)
    assert all(r["speedup_vs_fp32_eager"] == 1.0 for r in fit if r["variant"] == "fp32-eager")
    ref = report["reference"]["images"]
    assert [e["image"] for e in ref] == ["caps-96x64.png", "parrots-96x64.png"]
    for e in ref:  # the reference, its dense baseline and the encode are all measured in this run
        assert e["reference"]["steps"] == 20 and e["dense_ms"] > 0 and e["reference"]["psnr"] > 10
        assert e["dense_seconds_to_reference"] == pytest.approx(20 * e["dense_ms"] / 1000, rel=0.01)
        (enc,) = e["encodes"]
        assert enc["effort"] == 1 and enc["bpp"] <= 1.0 and enc["psnr"] > 10
        assert enc["psnr_minus_reference"] == pytest.approx(enc["psnr"] - e["reference"]["psnr"], abs=1e-3)
    # Run again with the same results file: nothing is measured twice.
    before = (tmp_path / "ref.json").read_text()
    assert main(["bench", "speed", "--images", str(image_dir), "--device", "cpu", "--json", str(out),
                 "--skip", "fit,batch,render", "--reference-steps", "20", "--efforts", "1",
                 "--results", str(tmp_path / "ref.json")]) == 0
    assert json.loads((tmp_path / "ref.json").read_text()) == json.loads(before)
    skipped = {s["what"] for s in report["skipped"]}
    assert {"fit variant bf16-autocast", "fit variant compiled", "GPU render timings"} <= skipped
    batched = report["batched"]
    assert batched["k"] == 2 and batched["images_per_s_batched"] > 0 and batched["max_psnr_gap_db"] < 0.1
    rows = {r["size"]: r for r in report["render"]["rows"]}
    assert set(rows) == {"48x32", "300x200"}
    assert "cpu_direct_ms" not in rows["48x32"] and rows["48x32"]["psnr_vs_exact"] >= 45
    big = rows["300x200"]
    assert big["psnr_vs_direct"] >= 45
    assert big["cpu_speedup"] == pytest.approx(big["cpu_direct_ms"] / big["cpu_fast_ms"], rel=0.05)


def test_speed_bench_bad_input_is_one_line(tmp_path, capsys):
    rc = main(["bench", "speed", "--images", str(tmp_path / "missing"), "--json", str(tmp_path / "o.json")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("tuner: error:") and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["bench", "speed", "--images", str(tmp_path), "--json", "x", "--sizes", "12xq"])
    assert e.value.code == 2


def test_mixed_precision_variant_runs_and_reports_quality(parrots):
    """The bf16 path is CUDA-only in the bench, but its code runs under CPU autocast too: check it trains."""
    import torch

    from tuner_model.bench.fit_steps import time_fit_steps
    from tuner_model.rate.plan import default_config

    img = parrots[:32, :48]
    cfg = default_config(48, 32, 3, 16)
    ms32, p32, peak = time_fit_steps(cfg, img, "fp32-eager", 15, 1, torch.device("cpu"))
    ms16, p16, _ = time_fit_steps(cfg, img, "bf16-autocast", 15, 1, torch.device("cpu"))
    assert peak is None and ms32 > 0 and ms16 > 0
    assert p16 > 10 and abs(p16 - p32) < 3  # bf16 hidden products cost little quality on this net
