"""`tuner bench speed`: fitting and rendering speed (issue 5)."""

from __future__ import annotations

import argparse


def register(bench_sub: argparse._SubParsersAction) -> None:
    """Adds `tuner bench speed` (not implemented yet)."""
