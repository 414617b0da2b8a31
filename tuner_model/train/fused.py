"""The grid path's (grid.py) top-layer backward, dz = cos(z) ⊙ (Cᵀ d_out) with C of 1 or 3 rows, as one
compiled loop over the tile: it reads z once and writes dz over it, where the eager form takes a cosine
pass in the forward and a product and a multiply pass per row in the backward (its gain per step is in
docs/PERFORMANCE.md). Compiling takes a few seconds once per process (less with inductor's cache) and
needs a C++ compiler, so it is opt-in: `warm_up()`; without it, or on any failure, the eager form runs
(the same function, tests/test_train_grid.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

top_backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
_compile_lock = threading.Lock()


def _top_backward(z: torch.Tensor, d_out: torch.Tensor, cw: torch.Tensor) -> None:
    """z (n, P) <- cos(z) ⊙ (Cᵀ d_out) for d_out (C, P): a tile laid out neuron-major, P its pixels."""
    g = cw[0][:, None] * d_out[0:1, :]
    for c in range(1, cw.shape[0]):
        g = g + cw[c][:, None] * d_out[c : c + 1, :]
    torch.mul(torch.cos(z), g, out=z)


def warm_up(enabled: bool = True) -> bool:
    """Compile the fused backward (seconds, once per process). Returns whether it is in use."""
    global top_backward
    if not enabled:
        top_backward = None
        return False
    with _compile_lock:
        if top_backward is None:
            try:
                fn = torch.compile(_top_backward, dynamic=True)
                for (n, pixels), channels in (((40, 51), 3), ((8, 10), 1), ((40, 165), 3)):
                    z = torch.linspace(-30, 30, n * pixels).reshape(n, pixels)
                    d = torch.linspace(-1, 2, channels * pixels).reshape(channels, pixels)
                    cw = torch.linspace(-0.5, 0.7, channels * n).reshape(channels, n)
                    want = torch.cos(z) * torch.matmul(cw.T, d)
                    got = z.clone()
                    fn(got, d, cw)
                    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                        return False
                top_backward = fn
            except Exception:  # noqa: BLE001 - no compiler, unsupported platform: the eager form is still correct
                return False
    return True


def fused_in_use() -> bool:
    return top_backward is not None
