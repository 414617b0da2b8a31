"""What planning or running a render refuses or stops with, in the renderer's own terms (service/api/render.py
raises them, from the request's thread or from a render thread through the render's future). The renderer
knows nothing of HTTP: service/api/problems.py answers each kind with its status, problem type and
Retry-After."""

from __future__ import annotations


class RenderError(Exception):
    """A render refused or stopped, in the renderer's terms: `detail` says why to the client; `retry_after_s`,
    when set, is how long to wait before asking again."""

    def __init__(self, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class BadCrop(RenderError):
    """The crop is not four fractions left,top,right,bottom of a non-empty region."""


class OverLimits(RenderError):
    """The render is over the size caps or over the compute budget: refused before any work."""


class RenderBusy(RenderError):
    """Every renderer is busy and the wait queue is full, or the render waited too long for one."""


class RenderGone(RenderError):
    """Every client waiting for the render went away: not started, or stopped between row tiles."""


class RenderTimeout(RenderError):
    """The render ran past its time limit, or the output's encode would have."""


__all__ = ["BadCrop", "OverLimits", "RenderBusy", "RenderError", "RenderGone", "RenderTimeout"]
