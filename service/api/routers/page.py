"""The web page at `/`: static files shipped in the package (no CDN, no build step), outside the OpenAPI."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(resources.files("service.api") / "static"))
# Everything from this origin; rendered images arrive as blob: URLs (fetched with the key). Never framed (the
# page has Delete buttons), no <base> or foreign form targets.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


@router.get("/docs")
@router.get("/redoc")
def docs() -> FileResponse:
    """The API reference, from the package. FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN
    (no installed package ships them), on the origin where the page keeps its key: not served."""
    return FileResponse(STATIC / "docs.html", media_type="text/html",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
