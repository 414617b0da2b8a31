"""Reading and writing raster images safely (Pillow), as float arrays in [0, 1] of shape (H, W, C).

Input is hostile: only a few formats are opened, the header's size is checked before any pixel is
decoded (decompression bombs), animations contribute their first frame, EXIF orientation is applied.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tuner_model.core.errors import ImageError
from tuner_model.core.files import atomic_write

# Formats we decode. Anything else (SVG, PDF, EPS, FITS...) is refused before a decoder runs.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "PPM")
OUTPUT_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "avif": "AVIF"}
MEDIA_TYPES = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg", "AVIF": "image/avif"}
DEFAULT_MAX_PIXELS = 40_000_000


def load_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image to float32 (H, W, C) in [0, 1]; C is 1 for grayscale inputs, else 3."""
    if isinstance(source, bytes | bytearray | memoryview):
        fp: io.BytesIO | Path = io.BytesIO(bytes(source))
        name = "image"
    else:
        fp = Path(source)
        name = str(source)
        if not fp.exists():
            raise ImageError(f"{name}: no such file")
        if fp.is_dir():
            raise ImageError(f"{name}: is a directory")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=INPUT_FORMATS) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise ImageError(f"{name}: image has no pixels")
                if w * h > max_pixels:
                    raise ImageError(f"{name}: image is too large ({w}x{h}; the limit is {max_pixels} pixels)")
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                return _to_array(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a supported format ({', '.join(INPUT_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large (decompression bomb)") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot decode image ({_short(e)})") from None


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        a = a / (65535.0 if a.max(initial=0) > 255 else 255.0)
        return np.clip(a, 0, 1)[..., None]
    if mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0, 1)[..., None]
    if mode in ("1", "L", "LA"):
        a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return a[..., None]
    if mode == "P" and "transparency" not in im.info and _palette_is_gray(im):
        return np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255.0
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _palette_is_gray(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Round float values in [0, 1] to 8 bits, clamping what the network overshoots."""
    return np.clip(np.rint(np.asarray(array, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def to_pil(array: np.ndarray) -> Image.Image:
    a = to_uint8(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def format_for_path(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in OUTPUT_FORMATS:
        raise ImageError(f"{path}: unsupported output extension; use one of .png, .webp, .jpg, .avif")
    return OUTPUT_FORMATS[ext]


def encode_image(array: np.ndarray, fmt: str = "PNG", quality: int | None = None) -> bytes:
    """Encode float (H, W, C) pixels as PNG, WEBP, JPEG or AVIF bytes."""
    fmt = OUTPUT_FORMATS.get(fmt.lower(), fmt.upper())
    if fmt not in MEDIA_TYPES:
        raise ImageError(f"unsupported output format {fmt!r}")
    im = to_pil(array)
    buf = io.BytesIO()
    kwargs: dict = {}
    if fmt == "PNG":
        kwargs["compress_level"] = 6
    elif fmt == "JPEG":
        kwargs.update(quality=quality or 90, optimize=True, subsampling="4:2:0" if (quality or 90) < 90 else 0)
    elif fmt == "WEBP":
        kwargs.update(quality=quality or 90, method=4)
    elif fmt == "AVIF":
        kwargs.update(quality=quality or 80)
    try:
        im.save(buf, format=fmt, **kwargs)
    except (OSError, KeyError, ValueError) as e:
        raise ImageError(f"cannot encode {fmt}: {_short(e)}") from None
    return buf.getvalue()


def save_image(array: np.ndarray, path: str | os.PathLike, quality: int | None = None) -> None:
    data = encode_image(array, format_for_path(path), quality)
    atomic_write(path, data)
