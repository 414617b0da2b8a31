"""The blob container (format version 2): a binary header that rebuilds the network, a payload of
per-tensor quantizers and an entropy-coded symbol stream, and a CRC-32. Layout in docs/FORMAT.md.

    magic "TUNR" | version u8 | body ... | CRC-32 (u32 LE) of every byte before it

The checksum and magic are checked before any field is parsed, and every field after them is parsed by
bitio.Reader, which bounds each length by the bytes actually present and each value by a fixed range
before anything is allocated. Foreign, truncated and corrupted files end in BlobError.
"""

from __future__ import annotations

import struct
import zlib

from tuner_model.core.errors import BlobError

MAGIC = b"TUNR"
VERSION = 2
MAX_BLOB = 64 * 1024 * 1024
_MIN = len(MAGIC) + 1 + 4


def pack(body: bytes, version: int = VERSION) -> bytes:
    data = MAGIC + bytes((version,)) + body
    if len(data) + 4 > MAX_BLOB:
        raise BlobError("blob exceeds the format's size limit")
    return data + struct.pack("<I", zlib.crc32(data))


def unpack(data: bytes, supported_versions: tuple[int, ...] = (VERSION,)) -> tuple[int, bytes]:
    """(version, body) of a blob whose magic, version, size and checksum are right."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BlobError("blob must be bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BlobError("not a TUNER blob (bad magic)")
    if len(data) < _MIN:
        raise BlobError("truncated blob")
    if len(data) > MAX_BLOB:
        raise BlobError("blob exceeds the format's size limit")
    version = data[len(MAGIC)]
    if version not in supported_versions:
        raise BlobError(f"unsupported blob version {version} (this build reads {supported_versions})")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise BlobError("blob checksum mismatch (truncated or corrupted)")
    return version, data[len(MAGIC) + 1 : -4]
