"""``/docs``: Swagger UI, with its own files served from here rather than from a CDN.

The files are the fastapi-swagger package's copies (it works offline and renders OpenAPI 3.1).
Its ``patch_fastapi`` is not used: it writes every asset link with ``request.url_for``, an
absolute ``http://<Host>/…`` URL built from the request's ``Host`` header, which breaks behind
a proxy, a TLS terminator or a port-forward and puts a caller-chosen host into the page. Every
link here is root-relative instead (under the request's ``root_path``, as FastAPI writes
``/openapi.json``'s), so the browser resolves it against whatever address it used.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

ASSETS_URL = "/swagger"
ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
"""Swagger UI's files in the fastapi-swagger package, each served at ``ASSETS_URL/<name>``, with its media type."""

UI_PARAMETERS = {"tryItOutEnabled": True, "persistAuthorization": True, "filter": True,
                 "displayRequestDuration": True}
"""fastapi-swagger's choices: "Try it out" open, a pasted API key kept across reloads, a filter box by tag."""


def root_of(request: Request) -> str:
    """The prefix the app is mounted under (empty at the root): the one part of a link taken from the request,
    and from the server's configuration (ASGI ``root_path``), never from a header a caller sets."""
    return request.scope.get("root_path", "").rstrip("/")


def install_swagger_ui(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at ``docs_url``, its files under :data:`ASSETS_URL`, and redirect ``/`` to it."""

    @app.get("/", include_in_schema=False)
    async def redirect_to_docs(request: Request) -> Response:
        return RedirectResponse(root_of(request) + docs_url)

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui_html(request: Request) -> Response:
        root = root_of(request)
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon-32x32.png",
            swagger_ui_parameters=UI_PARAMETERS,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> Response:  # sync: FastAPI reads the file in its thread pool, off the event loop
        media_type = ASSETS.get(name)
        if media_type is None:  # only the listed files: never the package's other contents
            raise HTTPException(404)
        return Response(resources.files("fastapi_swagger.resources").joinpath(name).read_bytes(),
                        media_type=media_type)
