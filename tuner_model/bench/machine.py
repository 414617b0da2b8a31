"""What a benchmark report says about the machine it ran on, and the device synchronisation its timers need."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch


def describe_machine(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "cpu": _cpu_name()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def cpu_summary() -> str:
    """One line for a result row made on the CPU: the CPU's name, torch's threads, the widest vector
    instructions it has, and whether MKL's fast path was forced on it (core/mkl_dispatch.py): what a
    row's seconds depend on, so that rows of one results file made on different machines say so."""
    from tuner_model.core import cbuild, mkl_dispatch

    flags = set(cbuild.cpu_flags().split())
    isa = next((name for flag, name in (("amx_bf16", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                if flag in flags), "no AVX2")
    fix = ", MKL dispatch fix" if mkl_dispatch.installed() else ""
    return f"{_cpu_name()}, {torch.get_num_threads()} threads, {isa}{fix}"


def _cpu_name() -> str:
    from tuner_model.core.cbuild import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor() or "unknown"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def best_time(fn: Callable[[], Any], repeats: int, dev: torch.device | None = None) -> tuple[float, Any]:
    """The fastest of `repeats` runs of fn (seconds) and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        if dev is not None:
            sync(dev)
        t0 = time.perf_counter()
        out = fn()
        if dev is not None:
            sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out
