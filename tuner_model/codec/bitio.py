"""Byte-level reading and writing for the blob format: LEB128 varints, little-endian floats, and a
reader that checks every length against the bytes actually left before it reads or allocates."""

from __future__ import annotations

import math
import struct

from tuner_model.core.errors import BlobError

MAX_VARINT_BYTES = 10  # enough for any 64-bit value; longer encodings are rejected, not looped over


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> None:
        if not 0 <= v <= 255:
            raise BlobError(f"value {v} does not fit a byte")
        self._parts.append(bytes((v,)))

    def varint(self, v: int) -> None:
        if v < 0 or v >= 1 << 64:
            raise BlobError(f"value {v} does not fit an unsigned varint")
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        self._parts.append(bytes(out))

    def f16(self, v: float) -> None:
        self._parts.append(struct.pack("<e", v))

    def f32(self, v: float) -> None:
        self._parts.append(struct.pack("<f", v))

    def f64(self, v: float) -> None:
        self._parts.append(struct.pack("<d", v))

    def raw(self, b: bytes) -> None:
        self._parts.append(bytes(b))

    def blob(self, b: bytes) -> None:
        """A length-prefixed byte string."""
        self.varint(len(b))
        self.raw(b)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads from an immutable byte string; any read past the end or out of range raises BlobError."""

    def __init__(self, data: bytes, what: str = "blob") -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise BlobError(f"truncated {self.what}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self._take(1)[0]

    def varint(self, lo: int = 0, hi: int = (1 << 64) - 1, name: str = "value") -> int:
        v = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.u8()
            v |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                break
        else:
            raise BlobError(f"{self.what}: overlong varint")
        if not lo <= v <= hi:
            raise BlobError(f"{self.what}: {name} {v} out of range {lo}..{hi}")
        return v

    def _float(self, fmt: str, n: int, name: str, lo: float, hi: float) -> float:
        (v,) = struct.unpack(fmt, self._take(n))
        if not math.isfinite(v) or not lo <= v <= hi:
            raise BlobError(f"{self.what}: {name} out of range")
        return v

    def f16(self, name: str = "value", lo: float = -math.inf, hi: float = math.inf) -> float:
        return self._float("<e", 2, name, lo, hi)

    def f32(self, name: str = "value", lo: float = -math.inf, hi: float = math.inf) -> float:
        return self._float("<f", 4, name, lo, hi)

    def f64(self, name: str = "value", lo: float = -math.inf, hi: float = math.inf) -> float:
        return self._float("<d", 8, name, lo, hi)

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def blob(self, max_len: int, name: str = "field") -> bytes:
        n = self.varint(0, min(max_len, self.remaining), name=f"{name} length")
        return self._take(n)

    def done(self) -> None:
        if self.remaining:
            raise BlobError(f"{self.what}: {self.remaining} unexpected trailing bytes")
