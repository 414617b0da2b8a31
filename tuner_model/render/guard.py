"""Stopping a render from outside: a service sets a check (client gone, time up) around a render, and the
renderer's tile loops call `checkpoint()`, which raises RenderStopped when the check gives a reason. A context
variable rather than a parameter threaded through every renderer: the check belongs to the caller's thread,
and a render without one pays a lookup per tile."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tuner_model.core.errors import TunerError

StopCheck = Callable[[], str | None]  # a reason to stop, or None to go on
_check: ContextVar[StopCheck | None] = ContextVar("tuner_render_stop", default=None)


class RenderStopped(TunerError):
    """The render's caller asked it to stop (the reason is the message)."""


@contextmanager
def stop_when(check: StopCheck) -> Iterator[None]:
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def checkpoint() -> None:
    check = _check.get()
    if check is not None:
        reason = check()
        if reason:
            raise RenderStopped(reason)
