"""Building a small C file into a shared library on this machine, once, into a cache directory
(TUNER_NATIVE_CACHE, default ~/.cache/tuner-native), keyed by the source, the flags and the CPU. No torch:
the MKL dispatch fix (core/mkl_dispatch.py) builds its library before torch is imported."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("TUNER_NATIVE_CACHE") or Path.home() / ".cache" / "tuner-native")


def cpu_flags() -> str:
    """The CPU's flags line of /proc/cpuinfo (what -march=native compiles for), else a coarser name."""
    return cpuinfo_field("flags") or platform.processor() + platform.machine()


def cpu_vendor() -> str:
    """The CPU vendor's id (GenuineIntel, AuthenticAMD, ...), or "" where /proc/cpuinfo does not say."""
    return cpuinfo_field("vendor_id")


def cpuinfo_field(name: str) -> str:
    """The first value of `name` in /proc/cpuinfo ("model name", "flags", ...), or "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def compiler() -> str | None:
    """The C compiler to build with ($CC, cc or gcc), or None where there is none."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def build(source: bytes, name: str, flags: Sequence[str], cc: str) -> Path:
    """The shared library built from `source` with `flags`, from the cache when it is there. Raises
    OSError or subprocess.SubprocessError when it cannot be built."""
    key = hashlib.sha256(source + " ".join(flags).encode() + cpu_flags().encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / f"{name}.c"
        src.write_bytes(source)
        out = Path(tmp) / f"{name}.so"
        subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], check=True, capture_output=True, timeout=120)
        os.replace(out, target)  # atomic: another process building the same file finds either none or all
    return target
