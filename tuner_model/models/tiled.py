"""An image fitted as tiles (issue 28): the tile grid (core/tiling.py) and one FittedImage per tile, row-major.
What a version-4 blob decodes to; rendered by render/tiled.py (data here, rendering there, as for FittedImage)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner_model.core.tiling import TileGrid
from tuner_model.models.fitted import FittedImage


@dataclass
class TiledImage:
    grid: TileGrid
    tiles: list[FittedImage]  # tile k is column k % nx of row k // nx, each tile_width × tile_height
    meta: dict = field(default_factory=dict)  # psnr (dB, the blended native-size render), seconds, ...

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def native(self) -> tuple[int, int]:
        return (self.grid.width, self.grid.height)

    @property
    def channels(self) -> int:
        return self.tiles[0].config.channels


__all__ = ["TiledImage"]
