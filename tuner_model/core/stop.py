"""Stopping work from outside, for fits and renders alike: the caller sets a check around the work (a job
cancelled, a client gone, time up) and the work's loops call `checkpoint()`, which raises Stopped when the
check gives a reason. A context variable rather than a parameter threaded through every signature: the check
belongs to the caller's thread, and work without one pays a lookup per step or tile.

A batch's caller may also stop one member alone (`stop_when(member=...)`: the member's index in the batch);
the batch encoder drops that member and the others go on. Checks nest: an inner `stop_when` adds its check to
the outer ones, and its `member` check, when given, replaces the outer one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tuner_model.core.errors import Stopped

StopCheck = Callable[[], str | None]  # a reason to stop, or None to go on
MemberCheck = Callable[[int], bool]  # whether a batch's member k is to stop


@dataclass(frozen=True)
class _Checks:
    whole: tuple[StopCheck, ...] = ()
    member: MemberCheck | None = None


_NO_CHECKS = _Checks()  # frozen: safe to share as the default
_checks: ContextVar[_Checks] = ContextVar("tuner_stop", default=_NO_CHECKS)


@contextmanager
def stop_when(check: StopCheck | None = None, member: MemberCheck | None = None) -> Iterator[None]:
    outer = _checks.get()
    token = _checks.set(_Checks(outer.whole + ((check,) if check is not None else ()),
                                member if member is not None else outer.member))
    try:
        yield
    finally:
        _checks.reset(token)


def stop_reason() -> str | None:
    for check in _checks.get().whole:
        reason = check()
        if reason:
            return reason
    return None


def checkpoint() -> None:
    """Raises Stopped when a check around the caller gives a reason."""
    if _checks.get().whole:
        reason = stop_reason()
        if reason:
            raise Stopped(reason)


def member_check() -> MemberCheck | None:
    """The check that stops one member of a batch, if the caller set one."""
    return _checks.get().member
