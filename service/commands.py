"""The service's subcommands of `tuner` (serve, api, worker). Only argparse is imported here; each
command imports the web and queue stacks when it runs, so the library CLI stays light."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `tuner serve`, `tuner api` and `tuner worker` (not implemented yet)."""
