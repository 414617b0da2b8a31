"""`tuner bench cancel`: how soon a cancelled encode of a large image stops, at several moments of the
encode, and the process's peak memory. The service's cancel reaches a fit through its worker's heartbeat
(every TUNER_HEARTBEAT_S), so a cancel takes effect within a heartbeat plus the latency measured here."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tuner_model.core.errors import FitCancelled
from tuner_model.core.stop import stop_when
from tuner_model.rate.encode import encode
from tuner_model.rate.request import EncodeSettings
from tuner_model.train.fit import FitProgress


@dataclass(frozen=True)
class CancelOptions:
    width: int
    height: int
    bpp: float
    effort: int
    after: tuple[float, ...]  # seconds into the encode at which to cancel, one encode each
    device: str = "cpu"


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image of any size (no data to ship): smooth shapes at several scales and fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= width
    y /= height
    out = np.zeros((height, width, 3), np.float32)
    for scale in (2, 6, 20, 60):
        for _ in range(3):
            fx, fy, ph = rng.uniform(-scale, scale), rng.uniform(-scale, scale), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (fx * x + fy * y) + ph) / scale ** 0.7
            out += wave[..., None] * rng.uniform(0.2, 1.0, 3).astype(np.float32)
    out += rng.normal(0, 0.02, out.shape).astype(np.float32)
    lo, hi = out.min(), out.max()
    return ((out - lo) / (hi - lo)).astype(np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cancel_once(image: np.ndarray, settings: EncodeSettings, after: float) -> dict:
    """One encode, cancelled `after` seconds in: how long it took to stop, and how far it had got."""
    flag = threading.Event()
    state: dict[str, float] = {"progress": 0.0}

    def fire() -> None:
        state["asked"] = time.perf_counter()
        state["progress_at_cancel"] = state["progress"]
        flag.set()

    def progress(p: FitProgress) -> None:
        state["progress"] = p.fraction

    timer = threading.Timer(after, fire)
    started = time.perf_counter()
    timer.start()
    try:
        with stop_when(lambda: "cancelled" if flag.is_set() else None):
            encode(image, settings, progress=progress)
        row: dict = {"after_s": after, "finished_before_cancel": True, "seconds": time.perf_counter() - started}
    except FitCancelled:
        row = {"after_s": after, "finished_before_cancel": False,
               "latency_s": round(time.perf_counter() - state["asked"], 3),
               "progress_at_cancel": round(state.get("progress_at_cancel", 0.0), 4)}
    finally:
        timer.cancel()
    row["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return row


def bench_cancel(opts: CancelOptions, log: Callable[[str], None] = print) -> dict:
    image = synthetic_photo(opts.width, opts.height)
    before = peak_rss_mib()
    settings = EncodeSettings(bpp=opts.bpp, effort=opts.effort, device=opts.device)
    rows = []
    for after in opts.after:
        row = _cancel_once(image, settings, after)
        log(f"cancel after {after:g} s: {row}")
        rows.append(row)
    return {"width": opts.width, "height": opts.height, "bpp": opts.bpp, "effort": opts.effort,
            "image_mib": round(image.nbytes / 2**20, 1), "rss_before_mib": round(before, 1), "rows": rows,
            "worst_latency_s": max((r.get("latency_s", 0.0) for r in rows), default=0.0),
            "peak_rss_mib": round(peak_rss_mib(), 1)}
