"""Progress on stderr: one encode's bar (`tuner encode`) and a benchmark run's (`tuner bench rd`)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tuner_model.core.progress import seconds_left


def duration_text(seconds: float | None) -> str:
    """A time in the largest two units: 45s, 3m05s, 2h10m; "--" for None (not known yet)."""
    if seconds is None:
        return "--"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def eta_text(elapsed: float, frac: float) -> str:
    """The time left of an encode `frac` done after `elapsed` seconds (core.progress.seconds_left, the rule the
    worker's `eta_s` follows too), or "--" while there is too little to go on."""
    if frac >= 1:
        return "0s"
    return duration_text(seconds_left(elapsed, frac))


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal: steps, PSNR, time spent
    and the estimated time left."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.perf_counter()

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        frac = p.fraction
        bar = "#" * int(30 * frac)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{bar:<30}] {p.step}/{p.total}  {p.psnr:5.2f} dB  {elapsed:6.1f}s  "
                         f"ETA {eta_text(elapsed, frac):>6}")
        if p.step == p.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class RunProgress:
    """A benchmark run's progress: encodes finished of all planned (resumed ones count as finished), the
    current encode and its share done, and the time left, from the seconds this process has spent per
    encode. On a terminal a bar redrawn in place; into a log file (a run in the background) a line at most
    every `every` seconds, so that `tail` shows where it is."""

    def __init__(self, stream: TextIO | None = None, every: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.start = time.perf_counter()
        self.last_line = -float("inf")
        self.first_done: int | None = None

    def __call__(self, done: int, total: int, label: str, frac: float) -> None:
        if self.first_done is None:
            self.first_done = done  # what an earlier run had finished: not this process's work
        now = time.perf_counter()
        elapsed = now - self.start
        worked = done - self.first_done + frac
        left = None if worked <= 0.02 else elapsed / worked * (total - done - frac)
        share = (done + frac) / total if total else 1.0
        bar = "#" * int(30 * share)
        text = (f"[{bar:<30}] {done}/{total} encodes  {label} {100 * frac:3.0f}%  {duration_text(elapsed)} spent  "
                f"ETA {duration_text(left)}")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if frac >= 1.0 else ""))
        elif now - self.last_line >= self.every or frac >= 1.0:
            self.stream.write(text + "\n")
            self.last_line = now
        else:
            return
        self.stream.flush()
