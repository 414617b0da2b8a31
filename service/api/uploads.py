"""Reading an upload: a multipart form with a `file` field, or a raw body. The size limit is enforced by
`BodySizeLimit` while the bytes stream in; here only the shape of the request is checked."""

from __future__ import annotations

import io
import warnings

from fastapi import Request
from starlette.datastructures import UploadFile

from .problems import ProblemError


async def read_upload(request: Request, raw_types: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """Returns the file's bytes and the other (text) form fields. `raw_types` are the content-type
    prefixes accepted as a raw body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16, max_part_size=64 * 1024)
        except ProblemError:
            raise
        except Exception as e:  # noqa: BLE001 - the multipart parser's many error types
            raise ProblemError(400, f"malformed multipart body ({type(e).__name__})") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ProblemError(400, "the multipart body needs a file field named 'file'")
            data = await upload.read()
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            if upload.filename:  # the name the upload comes with, unless a `name` field says otherwise
                fields.setdefault("name", upload.filename)
        finally:
            await form.close()
        return data, fields
    if not ctype or not any(ctype.startswith(t) for t in raw_types):
        raise ProblemError(415, f"unsupported content type {ctype or '(none)'!r}; send multipart/form-data "
                                f"with a 'file' field or a raw body of type {', '.join(raw_types)}")
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    return b"".join(chunks), {}


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# EXIF orientations that turn the image a quarter (the worker's decode applies them: width and height swap).
_QUARTER_TURNS = (5, 6, 7, 8)


def upload_name(*given: str | None) -> str | None:
    """The first name given (the query's, then the form's or the file's), as a plain name: no folders, no
    control characters, at most 200 characters; None when there is none."""
    for name in given:
        if name:
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            clean = "".join(c for c in base if c.isprintable()).strip()[:200]
            if clean:
                return clean
    return None


def _invalid(detail: str) -> ProblemError:
    return ProblemError(422, detail, problem="invalid-image")


def image_header(data: bytes, max_pixels: int) -> tuple[int, int, int]:
    """The upload's width, height and channels from its header alone: the API never decodes pixels (a small
    compressed upload can decode to gigabytes; the worker decodes, one job at a time). Refuses what is not an
    image of an accepted kind (415), and a header that is broken, too large, or (PNG) a file with bytes after
    its end or chunks that fail their CRC (422). The chunk walk of a PNG reads no pixel data."""
    from PIL import Image, UnidentifiedImageError

    from tuner_model.core.image_io import INPUT_FORMATS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=INPUT_FORMATS) as im:
                (w, h), fmt, mode = im.size, im.format, im.mode
                gray = mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") or (
                    mode == "P" and "transparency" not in im.info and _gray_palette(im.getpalette() or []))
                turned = _orientation(im) in _QUARTER_TURNS
                if w <= 0 or h <= 0:
                    raise _invalid("the image has no pixels")
                if w * h > max_pixels:
                    raise _invalid(f"image is too large ({w}x{h}; the limit is {max_pixels} pixels)")
                if fmt == "PNG":
                    im.verify()  # chunk CRCs up to IEND, no decompression
    except ProblemError:
        raise
    except UnidentifiedImageError:
        raise ProblemError(415, f"not an image of a supported kind ({', '.join(INPUT_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _invalid("image is too large (decompression bomb)") from None
    except Exception as e:  # noqa: BLE001 - Pillow's many ways to say "broken header"
        raise _invalid(f"cannot read the image's header ({type(e).__name__})") from None
    if fmt == "PNG" and not data.endswith(_PNG_END):
        raise _invalid("the PNG has data after its end (IEND chunk)")
    return (h, w, 1 if gray else 3) if turned else (w, h, 1 if gray else 3)


def _gray_palette(pal: list[int]) -> bool:
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _orientation(im) -> object:  # noqa: ANN001 - a PIL image
    """The EXIF orientation from what the header parse found (`getexif` would decode a PNG to look)."""
    from PIL import Image

    raw = im.info.get("exif")
    if raw:
        exif = Image.Exif()
        exif.load(raw if isinstance(raw, bytes) else bytes(raw))
        return exif.get(0x0112)
    tags = getattr(im, "tag_v2", None)  # TIFF
    return tags.get(0x0112) if tags is not None else None
