"""What a render's networks cost, by region (issue 28): the budget check of api/render.py counts, for an image
fitted as tiles (a version-4 blob), only the tiles that meet the requested region, each over the output pixels
in its blend support, exactly as render/tiled.py evaluates them; a one-network blob costs its parameters at
every output pixel. From a blob's header alone (no network built) and without torch: the API plans with it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from service.storage import BlobNotFound, BlobStore
from tuner_model.core.tiling import Axis, TileGrid

# Blobs whose RenderCost a process keeps (a grid and a count per tile each: small).
COST_ENTRIES = 4096
Box = tuple[float, float, float, float]  # a render's crop: left, top, right, bottom (fractions)


@dataclass(frozen=True)
class RenderCost:
    """One network's `parameters` (every output pixel evaluates it), or for an image fitted as tiles its
    `grid` and each tile's parameters (`tiles`, row-major; `parameters` their sum): an output pixel then
    evaluates only the tiles whose blend support holds it, so a crop inside one tile costs about one tile's
    network, not all of them."""

    parameters: int
    grid: TileGrid | None = None
    tiles: tuple[int, ...] = ()

    def _axes(self, width: int, height: int, crop: Box) -> tuple[list[int], list[int]]:
        """How many of the output's columns (rows) fall in each tile column's (row's) blend support."""
        assert self.grid is not None
        l, t, r, b = crop
        return support_counts(width, l, r, self.grid.x), support_counts(height, t, b, self.grid.y)

    def meeting(self, width: int, height: int, crop: Box) -> list[int]:
        """The tiles a width × height render of `crop` evaluates (one network's: [0])."""
        if self.grid is None:
            return [0]
        cols, rows = self._axes(width, height, crop)
        return [k for k in range(self.grid.count) if cols[k % self.grid.nx] and rows[k // self.grid.nx]]

    def work(self, width: int, height: int, crop: Box) -> int:
        """The exact evaluation's multiply-adds, near enough: output pixels evaluated × their network's
        parameters, summed over the tiles that meet the region."""
        if self.grid is None:
            return width * height * max(1, self.parameters)
        cols, rows = self._axes(width, height, crop)
        nx = self.grid.nx
        return sum(cols[k % nx] * rows[k // nx] * max(1, n) for k, n in enumerate(self.tiles))


def support_counts(n: int, lo: float, hi: float, axis: Axis) -> list[int]:
    """For each tile along `axis`, how many of n output pixel centres over the fraction [lo, hi] of the axis
    lie strictly inside its blend support: the positions and the rule of render/tiled.py (pixel_positions,
    _inside), in numpy."""
    u = (lo + (hi - lo) * (np.arange(n, dtype=np.float64) + 0.5) / n) * axis.size
    out = []
    for i in range(axis.count):
        a, b = axis.support(i)
        out.append(max(0, int(np.searchsorted(u, b, "left")) - int(np.searchsorted(u, a, "right"))))
    return out


def blob_cost(data: bytes, parameters: int) -> RenderCost:
    """A blob's RenderCost from its header: a version-4 blob's grid and tiles' parameters, else `parameters`
    (the image row's count) for its one network."""
    from tuner_model.codec.tiled_blob import is_tiled_blob, read_tiled_info

    if not is_tiled_blob(data):
        return RenderCost(parameters)
    info = read_tiled_info(data)
    return RenderCost(info.parameters, info.grid, tuple(t.parameters for t in info.tiles))


class CostCache:
    """Each blob's RenderCost by digest, read from its header on first use (the budget is checked before a
    render, cached or not, so each check must not read the blob again), the least recently used dropped."""

    def __init__(self, store: BlobStore, entries: int = COST_ENTRIES) -> None:
        self.store, self.entries = store, entries
        self._costs: OrderedDict[str, RenderCost] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blob_digest: str, parameters: int) -> RenderCost:
        """The blob's RenderCost (`parameters`: its image row's count). A blob missing from storage costs its
        whole count, not kept (its render then answers 404)."""
        with self._lock:
            if blob_digest in self._costs:
                self._costs.move_to_end(blob_digest)
                return self._costs[blob_digest]
        try:
            data = self.store.get(f"blobs/{blob_digest}")
        except BlobNotFound:
            return RenderCost(parameters)
        cost = blob_cost(data, parameters)
        with self._lock:
            self._costs[blob_digest] = cost
            while len(self._costs) > self.entries:
                self._costs.popitem(last=False)
        return cost


__all__ = ["COST_ENTRIES", "CostCache", "RenderCost", "blob_cost", "support_counts"]
