"""``/console``: the browser console, static files shipped inside the package (``rayprism/console/``), served
from here as ``/docs`` serves Swagger UI (:mod:`rayprism.deployments.swagger_ui`): no CDN, works offline.

The page lives at ``/console/`` (``/console`` redirects there), so its relative links resolve under it and its
API calls (``../v1/...``) reach this service under whatever prefix or address the browser used. Only files of
the listed kinds under the console folder are served: never a path that leaves it.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from rayprism.deployments.swagger_ui import root_of

CONSOLE_URL = "/console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The kinds of file the console is made of, with their media types: nothing else is served."""
NO_STORE = {"Cache-Control": "no-cache"}
"""A browser revalidates: after an upgrade it never mixes the old console's modules with the new one's."""


def console_file(path: str) -> bytes | None:
    """The bytes of the console's file at ``path`` (``a/b.js``), None unless it is one of its files."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    entry = resources.files("rayprism").joinpath("console", *parts)
    return entry.read_bytes() if entry.is_file() else None


def install_console(app: FastAPI) -> None:
    """Serve the console at ``CONSOLE_URL/``, its files below it."""

    @app.get(CONSOLE_URL, include_in_schema=False)
    async def console_redirect(request: Request) -> Response:
        return RedirectResponse(root_of(request) + CONSOLE_URL + "/")

    @app.get(CONSOLE_URL + "/{path:path}", include_in_schema=False)
    def console_asset(path: str) -> Response:  # sync: the file is read in FastAPI's thread pool
        path = path or "index.html"
        media_type = next((kind for suffix, kind in MEDIA_TYPES.items() if path.endswith(suffix)), None)
        body = console_file(path) if media_type else None
        if body is None:
            raise HTTPException(404)
        return Response(body, media_type=media_type, headers=NO_STORE)
