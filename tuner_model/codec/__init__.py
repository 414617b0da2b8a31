"""The codec: FittedImage <-> blob bytes. See docs/FORMAT.md for the bitstream, docs/CODEC.md for the
choices behind it.

Public API (stable for the CLI and the service):
    encode_blob(fitted, spec=None, quantizers=None) -> bytes   (no spec: lossless fp32 tensors)
    decode_blob(data) -> FittedImage
    read_info(data) -> BlobInfo      (header only; cheap; no network is built)
"""

from tuner_model.codec.blob import BlobInfo, decode_blob, encode_blob, read_info
from tuner_model.codec.quant import QuantSpec

__all__ = ["BlobInfo", "QuantSpec", "decode_blob", "encode_blob", "read_info"]
