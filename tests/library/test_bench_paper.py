"""The paper benchmark runs end to end on a tiny setting and reports what the protocol asks for."""

import json
import math

import numpy as np
import pytest

from tuner_cli.main import main
from tuner_model.bench.paper import HOLDOUT, SIZE, holdout_mask


def test_holdout_is_five_percent_and_seeded():
    a, b = holdout_mask(SIZE * SIZE), holdout_mask(SIZE * SIZE)
    assert np.array_equal(a, b)
    assert (~a).sum() == round(HOLDOUT * SIZE * SIZE)


def test_bench_paper_tiny(tmp_path, image_dir):
    out = tmp_path / "paper.json"
    rc = main(["bench", "paper", "--images", str(image_dir), "--epochs", "1", "--width", "16", "--device", "cpu",
               "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["images"] == 1 and report["protocol"]["size"] == 512
    for method in ("tuner", "siren", "ffm"):
        r = report["per_image"]["a.png"][method]
        assert r["steps"] == 4  # 249,037 training pixels in batches of 65,536
        for key in ("train_psnr", "heldout_psnr", "grad_psnr", "seconds"):
            assert math.isfinite(r[key])
        assert report["mean"][method]["heldout_psnr"] == r["heldout_psnr"]


def test_bench_paper_cpu_scale(tmp_path, image_dir):
    """Below 512 the CPU-scale protocol: width and epochs scaled down, TUNER on grid rows, the others on
    random pixel batches, all with the same held-out 5%."""
    out = tmp_path / "paper.json"
    results = tmp_path / "runs.json"
    rc = main(["bench", "paper", "--images", str(image_dir), "--size", "32x32", "--epochs", "2", "--device", "cpu",
               "--json", str(out), "--results", str(results)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["protocol"]["size"] == 32 and report["protocol"]["width"] == 26
    assert report["protocol"]["tuner_batches"] == "rows"
    per = report["per_image"]["a.png"]
    assert per["tuner"]["batches"] == "rows" and per["siren"]["batches"] == per["ffm"]["batches"] == "pixels"
    assert all(per[m]["steps"] == 8 for m in per)
    # Run again on the same results file: nothing is fitted again (the seconds are those of the first run).
    assert main(["bench", "paper", "--images", str(image_dir), "--size", "32x32", "--epochs", "2", "--device", "cpu",
                 "--json", str(out), "--results", str(results)]) == 0
    assert json.loads(out.read_text())["per_image"] == report["per_image"]
    with pytest.raises(SystemExit) as e:
        main(["bench", "paper", "--images", str(image_dir), "--size", "32x16", "--json", str(out)])
    assert e.value.code == 2
