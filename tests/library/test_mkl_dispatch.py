"""MKL's vendor check answered on AMD CPUs (core/mkl_dispatch.py): when it applies, and that MKL asks it."""

from __future__ import annotations

import os
import subprocess
import sys

from tuner_model.core import cbuild, mkl_dispatch


def test_wanted_only_on_non_intel_x86_before_torch() -> None:
    assert mkl_dispatch.wanted("AuthenticAMD", "x86_64", torch_loaded=False, setting="1")
    assert not mkl_dispatch.wanted("GenuineIntel", "x86_64", torch_loaded=False, setting="1")
    assert not mkl_dispatch.wanted("AuthenticAMD", "aarch64", torch_loaded=False, setting="1")
    assert not mkl_dispatch.wanted("AuthenticAMD", "x86_64", torch_loaded=True, setting="1")
    assert not mkl_dispatch.wanted("AuthenticAMD", "x86_64", torch_loaded=False, setting="0")
    assert not mkl_dispatch.wanted("", "x86_64", torch_loaded=False, setting="1")


# fp32 products of fp64 numbers against fp64's: whatever path MKL takes, the answers stay right
_PROBE = """
import tuner_model, torch
from tuner_model.core import mkl_dispatch
a = torch.randn(64, 64, dtype=torch.float64)
b = torch.randn(64, 4096, dtype=torch.float64)
err = (torch.mm(a.float(), b.float()).double() - a @ b).abs().max().item()
sin_err = (torch.sin(b.float()).double() - torch.sin(b)).abs().max().item()
print(mkl_dispatch.installed(), mkl_dispatch.calls(), err, sin_err, torch.backends.mkl.is_available())
"""


def _probe(tmp_path, **env: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, "TUNER_NATIVE_CACHE": str(tmp_path), **env}).stdout.split()


def test_in_place_exactly_where_wanted_and_mkl_asks_it(tmp_path) -> None:
    """Importing tuner_model before torch puts the answer in place on a non-Intel x86 CPU with a compiler,
    MKL then calls it (where torch has MKL), products and sines stay right, and the setting turns it off."""
    installed, calls, err, sin_err, mkl = _probe(tmp_path)
    expect = cbuild.cpu_vendor() not in ("", "GenuineIntel") and cbuild.compiler() is not None
    assert (installed == "True") == expect
    if expect and mkl == "True":
        assert int(calls) > 0
    assert float(err) < 1e-3 and float(sin_err) < 1e-5
    assert _probe(tmp_path, TUNER_MKL_DISPATCH="0")[:2] == ["False", "0"]
