"""argparse types of the `tuner` command's arguments: each turns bad text into one clear line."""

from __future__ import annotations

import argparse


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
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
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def effort_level(text: str) -> int:
    from tuner_model.rate.effort import EFFORT_MAX, EFFORT_MIN

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not EFFORT_MIN <= v <= EFFORT_MAX:
        raise argparse.ArgumentTypeError(f"must be in {EFFORT_MIN}..{EFFORT_MAX}, got {v}")
    return v


def sizes(text: str) -> list[tuple[int, int]]:
    return [size(t) for t in text.split(",") if t.strip()] if text else []


def ints(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return vals


def bpp_list(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not vals or not all(0.01 <= v <= 64 for v in vals):
        raise argparse.ArgumentTypeError("bpp values must be in [0.01, 64]")
    return vals
