"""One source of truth: what the README, docs/SERVICE.md, docs/PERFORMANCE.md and the web page state about
defaults, limits and times is what the code and the named results files say."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from service.estimate import estimate_fit_seconds, job_plan, over_time_limit
from service.settings import Settings
from tuner_model.rate import table as ratecontrol
from tuner_model.rate.effort import DEFAULT_EFFORT
from tuner_model.rate.request import DEFAULT_BPP, EncodeRequest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SERVICE = (ROOT / "docs" / "SERVICE.md").read_text()
PERFORMANCE = (ROOT / "docs" / "PERFORMANCE.md").read_text()
RESULTS = ROOT / "docs" / "results"


def _row(text: str, starts: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"| {starts}")]
    return line


def twelve_megapixels(device: str, workers: int = 1) -> tuple[int, float]:
    """A 4000x3000 photo at the defaults: its tiles and the admission estimate's hours (service/estimate.py)."""
    settings = Settings(fit_device=device)
    plan = job_plan(EncodeRequest(), 4000, 3000, 3, settings)
    assert over_time_limit(plan, settings) is None  # admitted
    return plan.count, estimate_fit_seconds(plan, settings, workers) / 3600


def test_readme_defaults_are_the_codes() -> None:
    assert f"with neither rate nor quality, {DEFAULT_BPP:g} bpp" in README
    assert f"default {DEFAULT_EFFORT}:" in README
    plan = ratecontrol.plan_for_bpp(DEFAULT_BPP, 768, 512, 3)
    row = _row(README, "what a photo sent with no parameters gets")
    assert f"{DEFAULT_BPP:g} bpp, effort {DEFAULT_EFFORT}" in row
    assert f"{['one', 'two', 'three', 'four'][plan.depth - 1]} hidden layers of {plan.width}" in row


def test_readme_admission_figures_are_the_estimates() -> None:
    tiles, hours = twelve_megapixels("cpu")
    row = _row(README, "a 12-megapixel photo (4000×3000) sent with no parameters")
    assert f"{tiles} tiles" in row and f"{hours:.1f} hours on one worker" in row, (tiles, hours)
    assert f"{twelve_megapixels('cpu', 4)[1]:.1f} on four" in row
    _, gpu_hours = twelve_megapixels("cuda")
    assert f"{gpu_hours * 60:.0f} minutes" in _row(README, "what a GPU worker changes"), gpu_hours


def test_readme_upload_limits_are_the_settings() -> None:
    s = Settings()
    row = _row(README, "the largest it accepts at all")
    assert f"{s.max_image_pixels / 1e6:g} Mpixel" in row and f"{s.max_upload_bytes // 2**20} MiB" in row
    assert f"`TUNER_SOFT_TIME_LIMIT_S` {s.soft_time_limit_s} s" in README


def _mean(path: str) -> dict[float, dict]:
    return {m["target_bpp"]: m for m in json.loads((RESULTS / path).read_text())["mean"]}


def test_readme_and_performance_times_and_quality_are_the_results_files() -> None:
    log = (RESULTS / "rd-native-deep-rcfit-2.0.log").read_text()  # the 3 x 217 encodes (kodim01, kodim03)
    deep = sorted(round(float(s)) for s in re.findall(r"'depth': 3, .*'seconds': ([\d.]+)", log))
    assert f"{deep[0]}–{deep[-1]} s for the fit alone" in README and f"| {deep[0]}–{deep[-1]} |" in PERFORMANCE
    effort4 = json.loads((RESULTS / "rd-native-deep-effort4.json").read_text())
    at_one = [r["seconds"] for im in effort4["images"] for r in im["rows"] if r["target_bpp"] == 1.0]
    span = f"{round(min(at_one))}–{round(max(at_one))}"
    assert f"{span} s over 12 Kodak images" in README and f"| {span} (mean {round(sum(at_one) / 12)}) |" in PERFORMANCE
    page = (RESULTS / "page-trial-kodim23.log").read_text()
    assert "done after 355 s" in page and "355 s through the web page" in README
    e4, e5 = _mean("rd-native-deep-effort4.json"), _mean("rd-native-deep-effort5-4images.json")
    for bpp, m in e4.items():
        assert f"| {m['psnr']:.2f} | {m['psnr'] - m['jpeg_psnr']:+.2f} |".replace("-", "−") in PERFORMANCE, bpp
    jpeg = _row(README, "how good, against JPEG")
    assert f"1 bpp: {e4[1.0]['psnr'] - e4[1.0]['jpeg_psnr']:+.2f} dB".replace("-", "−") in jpeg
    assert f"{e5[1.0]['psnr'] - e5[1.0]['jpeg_psnr']:+.2f} dB (effort 5".replace("-", "−") in jpeg


def test_every_results_file_the_docs_name_exists() -> None:
    for doc in (README, SERVICE, PERFORMANCE.split("## History")[0]):  # (history names planned GPU outputs too)
        for name in re.findall(r"docs/results/[\w.-]+", doc):
            assert (ROOT / name.rstrip(".")).exists(), name


def test_every_test_file_and_script_the_docs_name_exists() -> None:
    """(SERVICE.md named a test file that had moved.)"""
    docs = [README, SERVICE, PERFORMANCE, (ROOT / "ARCHITECTURE.md").read_text(),
            (ROOT / "docs" / "CODEC.md").read_text()]
    for doc in docs:
        for name in re.findall(r"\b((?:tests|scripts)/[\w/]+\.(?:py|sh))", doc):
            assert (ROOT / name).exists(), name


def test_performance_opens_with_the_current_numbers() -> None:
    heads = re.findall(r"^## (.+)$", PERFORMANCE, flags=re.M)
    assert heads[0] == "Current numbers" and heads[1].startswith("History")
    current = PERFORMANCE.split("## History")[0]
    for question in ("Quality per byte", "Encode time", "Render time", "Service throughput"):
        assert f"**{question}**" in current


_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "M": 10**6}


def _value(text: str) -> object:
    """A default as SERVICE.md writes it: 25 MiB, 16 M, 1e12, true, 20, auto, (none)/unset → None."""
    text = text.split(";")[0].split(":")[0].strip()
    if text in ("true", "false"):
        return text == "true"
    m = re.fullmatch(r"([\d.e+]+)\s*(KiB|MiB|GiB|M)?", text)
    if m:
        return float(m.group(1)) * _UNITS.get(m.group(2) or "", 1)
    return text


def test_service_md_configuration_defaults_are_the_settings() -> None:
    section = SERVICE.split("## Configuration (`TUNER_*`)")[1].split("\n## ")[0]
    # `MAX_RENDER_WIDTH`/`HEIGHT` (8192): two settings, one default
    section = re.sub(r"`([A-Z_]+)_([A-Z]+)`/`([A-Z]+)` \(([^)]*)\)", r"`\1_\2` (\4), `\1_\3` (\4)", section)
    fields = Settings.model_fields
    checked = 0
    for n, shown in re.findall(r"`([A-Z_]+)` \(([^)]*)\)", section):
        key = n.lower()
        assert key in fields, f"SERVICE.md names TUNER_{n}, which is no setting"
        default = fields[key].get_default(call_default_factory=True)
        value = _value(shown)
        if isinstance(default, bool) or isinstance(value, bool):
            assert value == default, (n, shown, default)
        elif isinstance(default, int | float) and isinstance(value, float):
            assert value == pytest.approx(default, rel=0.01), (n, shown, default)
        else:
            continue  # words ("unset: ...", "hard limit + 600", the preset names): not a number to compare
        checked += 1
    assert checked >= 30, checked


def test_the_pages_fallbacks_are_the_codes_defaults() -> None:
    page = (ROOT / "service" / "api" / "static" / "index.html").read_text()
    assert re.search(rf'id="target-value"[^>]*value="{DEFAULT_BPP:g}"', page)
    assert re.search(rf'id="effort"[^>]*value="{DEFAULT_EFFORT}"', page)
    js = (ROOT / "service" / "api" / "static" / "app.js").read_text()
    assert 'fetch("/v1/limits")' in js and "default_bpp" in js and "default_effort" in js


def test_no_timings_in_effort_docstring() -> None:
    """Times go stale in docstrings; they live in docs/PERFORMANCE.md and the results files."""
    doc = ast.get_docstring(ast.parse((ROOT / "tuner_model" / "rate" / "effort.py").read_text())) or ""
    assert not re.search(r"\d\s?(s|ms|minutes)\b", doc), doc
    for root in ("service", "worker", "tuner_cli"):
        for f in (ROOT / root).rglob("*.py"):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    text = ast.get_docstring(node) or ""
                    assert not re.search(r"\d\s?(s|ms|minutes) on a \d-core", text), (f, text)
