"""Best of 7 ms of the API's render (the fast path, compiled sine) at 768×512 for each blob given, the blobs
alternated in one process. To compare two versions of the renderer, run it once per checkout and alternate.

    python scripts/render_time.py A.tnr B.tnr
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import tuner_model
from tuner_model.codec import decode_blob
from tuner_model.render import sines
from tuner_model.render.fast import render_fast


def main(paths: list[str]) -> None:
    print(tuner_model.__file__, "compiled sine:", sines.warm_up(compiled=True))
    blobs = {p: decode_blob(Path(p).read_bytes()) for p in paths}
    best = dict.fromkeys(blobs, float("inf"))
    for d in blobs.values():  # warm-up
        render_fast(d.model, (d.width, d.height), 768, 512, colour=d.colour)
    for _ in range(7):
        for p, d in blobs.items():
            t = time.perf_counter()
            render_fast(d.model, (d.width, d.height), 768, 512, colour=d.colour)
            best[p] = min(best[p], time.perf_counter() - t)
    for p, d in blobs.items():
        print(p, d.model.config.hidden, f"{best[p] * 1e3:.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
