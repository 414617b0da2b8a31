"""Format version 4: an image fitted as tiles (issue 28; docs/FORMAT.md, "Version 4").

    magic "TUNR" | version 4 | width, height, nx, ny, tile width, tile height, overlap (varints)
                 | meta (as version 2's header) | nx·ny payload lengths (varints) | the payloads | CRC-32

Each payload is a complete version-2 blob (codec/blob.py), one tile's network, row-major. A hostile blob
costs nothing before it is refused: the grid must be one core/tiling.py makes for the stated image size
(so a tile count cannot outgrow the image, nor the blend windows meet); the tile count is bounded by the
bytes present before any length is read; the lengths must add up to exactly the bytes left; each payload
goes through the version-2 parser (itself bounded) and must state the grid's tile size and the first
tile's channels; and every tile's parameters are bounded by its own bytes, their total by a fixed cap,
before any network is built.

`decode_any` and `read_any_info` take either version this build writes (2 or 4); the package exports them
as `decode_blob` and `read_info`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tuner_model.codec import blob as v2
from tuner_model.codec.bitio import Reader, Writer
from tuner_model.codec.container import MAGIC, pack, unpack
from tuner_model.codec.header import MAX_SIDE, BlobInfo, read_meta, write_meta
from tuner_model.core.errors import BlobError, ConfigError
from tuner_model.core.tiling import MAX_OVERLAP, TileGrid
from tuner_model.models.fitted import FittedImage
from tuner_model.models.tiled import TiledImage

VERSION = 4
MAX_TILES = 4096  # 64 × 64 tiles of 768 × 512: far beyond a 50-megapixel photo
# The smallest version-2 blob: magic, version, a 5-byte header, CRC. A tile count is bounded by the bytes
# present with it before any length is read.
MIN_TILE_BLOB = 14
# A tile may state at most this many parameters per byte of its payload (half a bit each; the encoder spends
# 5.5-6.5 bits): a network must be paid for in bytes, so a few kilobytes cannot ask for millions of
# parameters that every render then evaluates.
PARAMS_PER_BYTE = 16
# Every tile's parameters together (128 MB of float32 weights decoded): well above a 50-megapixel photo at
# 2 bpp (about 17 M).
MAX_TOTAL_PARAMETERS = 32_000_000


@dataclass(frozen=True)
class TiledInfo:
    """What `read_any_info` reports of a version-4 blob: BlobInfo's fields that describe the whole image,
    the grid, and each tile's own header."""

    width: int
    height: int
    channels: int
    colour: str
    meta: dict
    bytes: int
    parameters: int
    grid: TileGrid
    tiles: tuple[BlobInfo, ...]

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / (self.width * self.height)


def is_tiled_blob(data: bytes) -> bool:
    """Whether `data` claims to be a tiled blob (version 4); the parser checks the rest."""
    return isinstance(data, bytes | bytearray | memoryview) and bytes(data[: len(MAGIC) + 1]) == MAGIC + bytes(
        (VERSION,))


def encode_tiled_blob(grid: TileGrid, payloads: Sequence[bytes], meta: dict | None = None) -> bytes:
    """The container of `payloads` (one version-2 blob per tile of `grid`, row-major)."""
    try:
        grid.check()
    except ConfigError as e:
        raise BlobError(str(e)) from None
    if grid.count < 2 or len(payloads) != grid.count:
        raise BlobError(f"a tiled blob holds {grid.count} >= 2 tiles, got {len(payloads)} payloads")
    w = Writer()
    for v in (grid.width, grid.height, grid.nx, grid.ny, grid.tile_width, grid.tile_height, grid.overlap):
        w.varint(v)
    write_meta(w, meta or {})
    for p in payloads:
        w.varint(len(p))
    for p in payloads:
        w.raw(p)
    data = pack(w.getvalue(), VERSION)
    _parse(data)  # what we write must read back
    return data


def overhead(grid: TileGrid, meta: dict, most_per_tile: int) -> int:
    """The container's own bytes around payloads of at most `most_per_tile` bytes each: what a byte budget
    must leave for it."""
    w = Writer()
    for v in (grid.width, grid.height, grid.nx, grid.ny, grid.tile_width, grid.tile_height, grid.overlap):
        w.varint(v)
    write_meta(w, meta)
    length = Writer()
    length.varint(max(0, most_per_tile))
    return len(MAGIC) + 1 + len(w.getvalue()) + grid.count * len(length.getvalue()) + 4


def _parse(data: bytes) -> tuple[TiledInfo, list[bytes]]:
    _, body = unpack(data, (VERSION,))
    r = Reader(body, "tiled blob")
    width, height = r.varint(1, MAX_SIDE, "width"), r.varint(1, MAX_SIDE, "height")
    nx = r.varint(1, min(width, MAX_TILES), "tile columns")
    ny = r.varint(1, min(height, MAX_TILES // nx), "tile rows")
    grid = TileGrid(width, height, nx, ny, r.varint(1, width, "tile width"), r.varint(1, height, "tile height"),
                    r.varint(0, MAX_OVERLAP, "overlap"))
    if grid.count < 2:
        raise BlobError("tiled blob: one tile (a single network is a version-2 blob)")
    try:
        grid.check()
    except ConfigError as e:
        raise BlobError(str(e)) from None
    meta = read_meta(r)
    if grid.count * (1 + MIN_TILE_BLOB) > r.remaining:
        raise BlobError(f"tiled blob: {grid.count} tiles cannot fit in {r.remaining} bytes")
    lengths = [r.varint(MIN_TILE_BLOB, r.remaining, "tile length") for _ in range(grid.count)]
    if sum(lengths) != r.remaining:
        raise BlobError("tiled blob: the tile lengths do not add up to the payload")
    payloads = [r.raw(n) for n in lengths]
    tiles: list[BlobInfo] = []
    total = 0
    for k, p in enumerate(payloads):
        info = v2.read_info(p)
        if (info.width, info.height) != (grid.tile_width, grid.tile_height):
            raise BlobError(f"tiled blob: tile {k} is {info.width}x{info.height}, not the grid's tile size")
        if tiles and info.channels != tiles[0].channels:
            raise BlobError(f"tiled blob: tile {k} has {info.channels} channels, tile 0 {tiles[0].channels}")
        if info.parameters > PARAMS_PER_BYTE * len(p):
            raise BlobError(f"tiled blob: tile {k} declares {info.parameters} parameters in {len(p)} bytes")
        total += info.parameters
        if total > MAX_TOTAL_PARAMETERS:
            raise BlobError(f"tiled blob: more than {MAX_TOTAL_PARAMETERS} parameters in all")
        tiles.append(info)
    info = TiledInfo(width, height, tiles[0].channels, tiles[0].colour, meta, len(data), total, grid, tuple(tiles))
    return info, payloads


def read_tiled_info(data: bytes) -> TiledInfo:
    """The container's and each tile's header: cheap, builds no network."""
    return _parse(data)[0]


def decode_tiled_blob(data: bytes) -> TiledImage:
    info, payloads = _parse(data)
    return TiledImage(info.grid, [v2.decode_blob(p) for p in payloads], dict(info.meta))


def decode_any(data: bytes) -> FittedImage | TiledImage:
    """A version-2 blob's FittedImage or a version-4 blob's TiledImage (anything else: BlobError)."""
    return decode_tiled_blob(data) if is_tiled_blob(data) else v2.decode_blob(data)


def read_any_info(data: bytes) -> BlobInfo | TiledInfo:
    return read_tiled_info(data) if is_tiled_blob(data) else v2.read_info(data)


__all__ = ["MAX_TILES", "VERSION", "TiledInfo", "decode_any", "decode_tiled_blob", "encode_tiled_blob",
           "is_tiled_blob", "overhead", "read_any_info", "read_tiled_info"]
