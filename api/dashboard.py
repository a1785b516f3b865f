"""The live dashboard: one static page (``/`` and ``/dashboard``) and its assets.

Hand-written HTML, CSS and JavaScript with SVG sparklines, shipped in the package
(``api/static``): nothing is loaded from a CDN or any other host, so it works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)

_SECURITY_HEADERS = {
    # Everything the page needs comes from this origin (thumbnails are data from the API).
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=_SECURITY_HEADERS)


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
