"""Resumable benchmark results: finished runs kept in a JSON file with the settings they were made with,
so that a stopped long run continues after them (and a run with other settings starts afresh)."""

from __future__ import annotations

import json
from pathlib import Path

from tuner_model.core.files import atomic_write


def load_runs(path: Path | None, settings: dict, field: str) -> dict:
    """The finished runs (`field` of the file) of an earlier run with the same settings; {} otherwise."""
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(doc.get(field, {})) if doc.get("settings") == settings else {}


def save_runs(path: Path | None, settings: dict, field: str, runs: dict) -> None:
    if path is not None:
        atomic_write(path, (json.dumps({"settings": settings, field: runs}, indent=2) + "\n").encode())
