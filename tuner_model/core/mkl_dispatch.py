"""MKL's code path on AMD CPUs. The torch CPU wheel links Intel's oneMKL, which gives its vectorized kernels
(AVX2, AVX-512) only to CPUs whose vendor is Intel and runs a generic path elsewhere, for the matrix products
of the fit and the renderer and for torch.sin (MKL's vector maths). On a 2-core AMD EPYC with AVX-512 that
path ran a 153-wide layer's product at 70–72 GFLOPS; with the vendor check answered "yes" the same product
ran at 151–167 GFLOPS and a deep fit step 1.6–1.7× faster (docs/PERFORMANCE.md, "MKL on AMD CPUs"). MKL
still picks the instruction set from the CPU's feature flags, so a CPU gets only code it can run.

The check is MKL's `mkl_serv_intel_cpu_true`, which libtorch_cpu.so exports and calls through its symbol
table. A library loaded with RTLD_GLOBAL before torch defines it first and so answers for it: install()
builds that small library (core/cbuild.py) and loads it, which has to happen before torch is imported
(tuner_model/__init__.py calls it). TUNER_MKL_DISPATCH=0 turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

from tuner_model.core import cbuild

# The count says that MKL did ask (tests/library/test_mkl_dispatch.py).
SOURCE = b"""static int calls;
int mkl_serv_intel_cpu_true(void) { __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED); return 1; }
int tuner_mkl_dispatch_calls(void) { return __atomic_load_n(&calls, __ATOMIC_RELAXED); }
"""
FLAGS = ("-O2", "-shared", "-fPIC")
_tried = False
_lib: ctypes.CDLL | None = None  # the loaded answer, None where install() did not apply


def wanted(vendor: str, machine: str, torch_loaded: bool, setting: str) -> bool:
    """Whether to answer MKL's vendor check: on x86-64 CPUs not made by Intel, before torch is loaded (after,
    torch has bound the check to MKL's own answer), unless the setting is "0"."""
    return setting != "0" and not torch_loaded and machine in ("x86_64", "AMD64") and vendor not in ("", "GenuineIntel")


def install() -> bool:
    """Answer MKL's vendor check on this machine where wanted(); True when it is in place. Never raises: no
    compiler, a read-only cache or an odd platform leave MKL as it is."""
    global _lib, _tried
    if _tried:
        return installed()
    _tried = True
    if platform.system() == "Linux" and wanted(cbuild.cpu_vendor(), platform.machine(), "torch" in sys.modules,
                                               os.environ.get("TUNER_MKL_DISPATCH", "1")):
        cc = cbuild.compiler()
        try:
            if cc is not None:
                _lib = ctypes.CDLL(str(cbuild.build(SOURCE, "mkl_dispatch", FLAGS, cc)),
                                   mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        except (OSError, subprocess.SubprocessError):
            _lib = None
    return installed()


def installed() -> bool:
    """Whether install() put the answer in place in this process."""
    return _lib is not None


def calls() -> int:
    """How many times MKL has asked the vendor check in this process (0 where install() did not apply)."""
    return 0 if _lib is None else int(_lib.tuner_mkl_dispatch_calls())
