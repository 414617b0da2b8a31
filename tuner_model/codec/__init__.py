"""The codec: FittedImage <-> blob bytes. See docs/FORMAT.md for the bitstream.

Public API (stable for the CLI and the service):
    encode_blob(fitted) -> bytes
    decode_blob(data) -> FittedImage
    read_info(data) -> BlobInfo      (header only; cheap; no network is built)
"""

from .blob import BlobInfo, decode_blob, encode_blob, read_info

__all__ = ["BlobInfo", "decode_blob", "encode_blob", "read_info"]
