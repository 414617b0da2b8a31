"""argparse types of the `tuner` command's arguments: each turns bad text into one clear line."""

from __future__ import annotations

import argparse


def _int(text: str, what: str = "an integer") -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _numbers(text: str, cast: type, what: str) -> list:
    try:
        return [cast(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of {what}: {text!r}") from None


def positive_int(s: str) -> int:
    v = _int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def quality_level(s: str) -> int:
    v = _int(s)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be in 1..100, got {v}")
    return v


def output_format(s: str) -> str:
    """An output image format by name, any case (jpg is jpeg)."""
    name = {"jpg": "jpeg"}.get(s.lower(), s.lower())
    if name not in ("png", "webp", "jpeg", "avif"):
        raise argparse.ArgumentTypeError(f"not one of png, webp, jpg, avif: {s!r}")
    return name


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 192x128, got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise argparse.ArgumentTypeError("size sides must be in 8..8192")
    return w, h


def square(text: str) -> int:
    """A square side: N or NxN."""
    if "x" in text.lower():
        w, h = size(text)
        if w != h:
            raise argparse.ArgumentTypeError(f"the paper's protocol is square: got {text!r}")
        return w
    v = _int(text, "a size")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def effort_level(text: str) -> int:
    from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN

    v = _int(text)
    if not EFFORT_MIN <= v <= EFFORT_MAX:
        raise argparse.ArgumentTypeError(f"must be in {EFFORT_MIN}..{EFFORT_MAX}, got {v}")
    return v


def sizes(text: str) -> list[tuple[int, int]]:
    return [size(t) for t in text.split(",") if t.strip()] if text else []


def ints(text: str) -> list[int]:
    vals = _numbers(text, int, "integers")
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return vals


def seconds_list(text: str) -> list[float]:
    vals = _numbers(text, float, "numbers")
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"need seconds, none negative: {text!r}")
    return vals


def bpp_list(text: str) -> list[float]:
    vals = _numbers(text, float, "numbers")
    if not vals or not all(0.01 <= v <= 64 for v in vals):
        raise argparse.ArgumentTypeError("bpp values must be in [0.01, 64]")
    return vals
