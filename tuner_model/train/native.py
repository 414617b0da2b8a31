"""The grid path's top-layer kernel (top_layer.c), compiled on this machine with its C compiler and loaded
with ctypes: no torch headers, so it builds in about a second, and no build step at install time. Built once
per machine into a cache directory (core/cbuild.py); any failure (no compiler, an odd platform) leaves
`top_layer` None and the eager path runs (the same function: tests/library/test_native.py).
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import threading
from dataclasses import dataclass
from importlib import resources

import torch

from tuner_model.core import cbuild

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC",
         "-pthread")
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


def load() -> ctypes.CDLL | None:
    """The compiled kernel, building it the first time; None where it cannot be built or loaded."""
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("TUNER_NATIVE", "1") == "0" or platform.system() != "Linux":
            return None
        compiler = cbuild.compiler()
        if compiler is None:
            return None
        try:
            source = (resources.files("tuner_model.train") / "top_layer.c").read_bytes()
            lib = ctypes.CDLL(str(cbuild.build(source, "top_layer", FLAGS, compiler)))
            fn = lib.tuner_top_layer
        except (OSError, subprocess.SubprocessError, AttributeError):
            return None
        p = ctypes.c_void_p
        fn.argtypes = [p, p, p, p, p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
                       ctypes.c_long, ctypes.c_float, ctypes.c_int, p, p, p]
        fn.restype = ctypes.c_int
        _lib = lib
        return _lib


def _ptr(x: torch.Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


@dataclass
class Sums:
    """What a tile adds to, all float64: the squared error (1,), the output bias's gradient (c,) and the
    output matrix's (c, n)."""

    loss: torch.Tensor
    d_b: torch.Tensor
    d_c: torch.Tensor

    @classmethod
    def zeros(cls, c: int, n: int) -> Sums:
        f64 = torch.float64
        return cls(torch.zeros(1, dtype=f64), torch.zeros(c, dtype=f64), torch.zeros((c, n), dtype=f64))


def top_layer(z: torch.Tensor, cw: torch.Tensor, cb: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor | None, scale: float, sums: Sums, neuron_major: bool = False) -> bool:
    """One tile's top layer (top_layer.c): z (t, n, w), or (n, t, w) when `neuron_major`, becomes dz, and
    `sums` are added to. False (nothing touched) where the kernel is not there or does not apply."""
    lib = load()
    if lib is None or z.is_cuda or z.dtype != torch.float32:
        return False
    if neuron_major:
        n, t, w = z.shape
        row_stride, neuron_stride = w, t * w
    else:
        t, n, w = z.shape
        row_stride, neuron_stride = n * w, w
    c = cw.shape[0]
    tensors = (z, cw, cb, target) + (() if mask is None else (mask,))
    if not all(x.is_contiguous() and x.dtype == torch.float32 for x in tensors):
        return False
    if not all(x.is_contiguous() and x.dtype == torch.float64 for x in (sums.loss, sums.d_b, sums.d_c)):
        return False
    rc = lib.tuner_top_layer(_ptr(z), _ptr(cw), _ptr(cb), _ptr(target), _ptr(mask), t, n, w, c, row_stride,
                             neuron_stride, scale, torch.get_num_threads(), _ptr(sums.loss), _ptr(sums.d_b),
                             _ptr(sums.d_c))
    return rc == 0
