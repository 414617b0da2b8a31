"""The codec: FittedImage <-> blob bytes. See docs/FORMAT.md for the bitstream, docs/CODEC.md for the
choices behind it.

Public API (stable for the CLI and the service):
    encode_blob(fitted, spec=None, quantizers=None) -> bytes   (no spec: lossless fp32 tensors)
    decode_blob(data) -> FittedImage | TiledImage   (version 2: one network; version 4: an image fitted as
                                                     tiles, codec/tiled_blob.py)
    read_info(data) -> BlobInfo | TiledInfo          (headers only; cheap; no network is built)
The version-3 latent prototype has its own (codec/latent_blob.py).
"""

from tuner_model.codec.blob import BlobInfo, encode_blob
from tuner_model.codec.quant import QuantSpec
from tuner_model.codec.tiled_blob import TiledInfo
from tuner_model.codec.tiled_blob import decode_any as decode_blob
from tuner_model.codec.tiled_blob import read_any_info as read_info

__all__ = ["BlobInfo", "QuantSpec", "TiledInfo", "decode_blob", "encode_blob", "read_info"]
