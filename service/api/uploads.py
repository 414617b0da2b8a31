"""Reading an upload: a multipart form with a `file` field, or a raw body. The size limit is enforced by
`BodySizeLimit` while the bytes stream in; here only the shape of the request is checked."""

from __future__ import annotations

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
