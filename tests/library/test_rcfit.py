"""`tuner bench rc-fit` end to end on a tiny image: a table row per rate from the best guess, resumable."""

from __future__ import annotations

import json
from pathlib import Path

from tuner_cli.main import main
from tuner_model.bench.rcfit import choose
from tuner_model.rate.table import load_table


def test_rc_fit_writes_a_loadable_table_and_resumes(tmp_path: Path, image_dir: Path) -> None:
    out, results = tmp_path / "table.json", tmp_path / "rc-runs.json"
    args = ["bench", "rc-fit", "--images", str(image_dir), "--size", "48x32", "--device", "cpu", "--effort", "1",
            "--bpp", "3.0", "--json", str(out), "--results", str(results)]
    assert main([*args, "--guesses", "4,6"]) == 0
    first = json.loads(out.read_text())
    runs = json.loads(results.read_text())
    assert set(runs["encodes"]) == {"a.png@3.0@4.0", "a.png@3.0@6.0"}
    widths = {k: r["width"] for k, r in runs["encodes"].items()}
    assert widths["a.png@3.0@4.0"] > widths["a.png@3.0@6.0"]  # fewer bits per parameter: a wider network
    (row,) = first["rows"]
    chosen = choose(first["trials"])
    assert row["psnr"] == round(chosen["psnr"], 4) and row["levels"] == chosen["levels"]
    assert all(8 * r["bytes"] <= 3.0 * 48 * 32 for r in runs["encodes"].values())
    assert load_table(str(out))[0].bpp == 3.0  # the encoder can read what rc-fit writes

    assert main([*args, "--guesses", "4,6,8"]) == 0  # one more guess: only it is encoded
    again = json.loads(results.read_text())["encodes"]
    assert len(again) == 3
    assert {k: again[k] for k in runs["encodes"]} == runs["encodes"]  # the finished encodes, kept


def test_a_near_tie_goes_to_the_faster_network() -> None:
    slow = {"psnr": 30.05, "seconds": 500.0, "depth": 4}
    fast = {"psnr": 30.0, "seconds": 300.0, "depth": 3}
    worse = {"psnr": 29.5, "seconds": 100.0, "depth": 1}
    assert choose([slow, fast, worse]) is fast  # 0.05 dB is a tie: the faster wins
    clear = {"psnr": 30.5, "seconds": 600.0, "depth": 5}
    assert choose([slow, fast, worse, clear]) is clear  # 0.45 dB better is not
