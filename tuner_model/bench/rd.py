"""`tuner bench rd`: rate–distortion against JPEG, WebP and AVIF (issue 3)."""

from __future__ import annotations

import argparse


def register(bench_sub: argparse._SubParsersAction) -> None:
    """Adds `tuner bench rd` (not implemented yet)."""
