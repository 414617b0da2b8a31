"""The sine of the renderer: torch.sin, or a fused odd polynomial compiled with torch.compile once warmed
up (roughly halves a render's remaining time; needs a C++ compiler and some seconds to compile, so a
long-running process opts in with `warm_up(compiled=True)`)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch

_compiled_sin: Callable[[torch.Tensor], torch.Tensor] | None = None
_compiled_fold: Callable[[torch.Tensor, torch.Tensor], None] | None = None
_compile_lock = threading.Lock()
# Odd least-squares polynomial for sin on [-π/2, π/2] (max error 3e-9 before float32 rounding).
_SIN_COEF = (0.9999999765032261, -0.16666647586661038, 0.008332899106595845, -0.0001980085812855719,
             2.590415483596333e-06)


def poly_sin(z: torch.Tensor) -> torch.Tensor:
    """sin(z) by reduction to [-π/2, π/2] and an odd polynomial: one fused loop once compiled."""
    q = torch.round(z * (1.0 / math.pi))
    r = z - q * math.pi
    r2 = r * r
    c0, c1, c2, c3, c4 = _SIN_COEF
    p = (((c4 * r2 + c3) * r2 + c2) * r2 + c1) * r2 + c0
    sign = 1.0 - 2.0 * (q - 2.0 * torch.floor(q * 0.5))  # (-1)^q
    return p * r * sign


def _poly_sin_(z: torch.Tensor) -> torch.Tensor:
    """poly_sin written back into `z` (1-D): compiled, one pass that needs no fresh output buffer."""
    return z.copy_(poly_sin(z))


def warm_up(compiled: bool = True) -> bool:
    """Compile the fused sines (seconds, once per process; needs a C++ compiler). Returns whether the
    compiled sines are in use; on any failure the renderer keeps torch.sin."""
    global _compiled_sin, _compiled_fold
    if not compiled:
        _compiled_sin = _compiled_fold = None
        return False
    with _compile_lock:
        if _compiled_sin is None:
            try:
                fn = torch.compile(_poly_sin_, dynamic=True)
                fold = torch.compile(_fold_sin, dynamic=True)
                # Several lengths, 2 among them, so that the graphs in use are the dynamic-shape ones (a
                # first call of some length specialises on it) and a tile of any size reuses them.
                for n in (4099, 2, 4099 * 3):
                    probe = torch.linspace(-50, 50, n)
                    other = torch.linspace(3, -7, n)
                    p, q = probe.clone(), other.clone()
                    fold(p, q)
                    err = max(float((fn(probe.clone()) - torch.sin(probe)).abs().max()),
                              float((p - torch.sin(probe + other)).abs().max()),
                              float((q - torch.sin(probe - other)).abs().max()))
                    if err > 1e-5:
                        return False
                _compiled_sin, _compiled_fold = fn, fold
            except Exception:  # noqa: BLE001 - no compiler, unsupported platform: eager is still correct
                return False
    return True


def _fold_sin(p: torch.Tensor, q: torch.Tensor) -> None:
    """p, q <- sin(p + q), sin(p − q) in one pass (1-D views; compiled by warm_up)."""
    s, d = p + q, p - q
    p.copy_(poly_sin(s))
    q.copy_(poly_sin(d))


def _fold_eager(p: torch.Tensor, q: torch.Tensor) -> None:
    p.add_(q)
    torch.add(p, q, alpha=-2.0, out=q)  # (C + S) − 2S = C − S
    torch.sin_(p)
    torch.sin_(q)


def fold_impl() -> Callable[[torch.Tensor, torch.Tensor], None]:
    fn = _compiled_fold
    if fn is None:
        return _fold_eager
    return lambda p, q: fn(p.view(-1), q.view(-1))


def compiled_in_use() -> bool:
    """Whether renders use the compiled sine (after a successful `warm_up`)."""
    return _compiled_sin is not None


def warm_up_in_background() -> threading.Thread:
    """`warm_up()` on a daemon thread: a server starts answering at once, eager until the compile is done."""
    t = threading.Thread(target=warm_up, name="render-warm-up", daemon=True)
    t.start()
    return t


def sin_impl() -> Callable[[torch.Tensor], torch.Tensor]:
    """In-place sine of a contiguous tensor: torch.sin_, or the compiled polynomial once warmed up."""
    fn = _compiled_sin
    if fn is None:
        return torch.sin_
    return lambda z: fn(z.view(-1)).view(z.shape)
