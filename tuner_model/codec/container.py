"""The blob container: a versioned, checksummed envelope around a JSON header and a binary payload.

    offset  size  field
    0       4     magic b"TUNR"
    4       1     container version
    5       1     payload codec (0 = raw little-endian float32 tensors)
    6       4     header length H (u32 LE), at most MAX_HEADER
    10      H     header: UTF-8 JSON object
    10+H    4     payload length P (u32 LE), at most MAX_PAYLOAD
    14+H    P     payload
    14+H+P  4     CRC-32 of every byte before it

Every length is checked against the bytes actually present and against a fixed cap before anything
is allocated or parsed, so a hostile blob costs at most its own size. See docs/FORMAT.md.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from ..errors import BlobError

MAGIC = b"TUNR"
VERSION = 1
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 64 * 1024 * 1024
_FIXED = 4 + 1 + 1 + 4 + 4 + 4


@dataclass(frozen=True)
class Envelope:
    version: int
    codec: int
    header: dict
    payload: bytes


def pack(header: dict, payload: bytes, codec: int, version: int = VERSION) -> bytes:
    head = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(head) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise BlobError("blob header or payload exceeds the format's limits")
    body = b"".join(
        (MAGIC, bytes((version, codec)), struct.pack("<I", len(head)), head,
         struct.pack("<I", len(payload)), payload)
    )
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes, supported_versions: tuple[int, ...] = (VERSION,)) -> Envelope:
    """Split and verify a blob. Raises BlobError with a one-line reason on anything unexpected."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BlobError("blob must be bytes")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BlobError("not a TUNER blob (bad magic)")
    if len(data) < _FIXED:
        raise BlobError("truncated blob")
    version, codec = data[4], data[5]
    if version not in supported_versions:
        raise BlobError(f"unsupported blob version {version}")
    (hlen,) = struct.unpack_from("<I", data, 6)
    if hlen > MAX_HEADER or 10 + hlen + 4 > len(data) - 4:
        raise BlobError("truncated or oversized blob header")
    (plen,) = struct.unpack_from("<I", data, 10 + hlen)
    end = 14 + hlen + plen
    if plen > MAX_PAYLOAD or end + 4 != len(data):
        raise BlobError("blob length does not match its payload (truncated or trailing bytes)")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise BlobError("blob checksum mismatch (corrupted)")
    try:
        header = json.loads(data[10 : 10 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BlobError("blob header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BlobError("blob header must be a JSON object")
    return Envelope(version, codec, header, data[14 + hlen : end])
