"""``/openapi.json`` for routes that read their raw body.

Handlers parse request bytes themselves (one pydantic pass straight from JSON, the
fast path), so FastAPI cannot infer their request schemas. Each route declares its
body model and its answers here instead, errors included, and :func:`install` adds the
body models to the document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rayprism.platform.errors import ErrorResponse

REF = "#/components/schemas/{model}"

CALLER_ERRORS = {
    400: "Bad values: empty input, unknown filter field, invalid documents (listed in `error.errors`), malformed JSON",
    404: "Unknown model, collection or document",
    413: "Too many inputs, or a body above the size limit",
    422: "The body does not fit the schema; `error.param` names the field",
}
UNAUTHORISED = "No valid API key (`Authorization: Bearer <key>`) where the service requires one"
RETRY_LATER = {
    429: "The model's queue is full: retry after `Retry-After` seconds",
    503: "A model or the store is starting or restarting: retry after `Retry-After` seconds",
}


STORE_FULL = {507: "The store's disk is full (`store_full`): nothing of this request was written; free space, then retry"}


def request_body(model: type[BaseModel], *, required: bool = True) -> dict:
    """``openapi_extra`` declaring a route's JSON body (``required=False``: it may be left out)."""
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def answers(model: type[BaseModel] | None, *, status: int = 200, description: str = "Success",
            errors: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses``: the success body and every error status the route can answer."""
    documented: dict[int | str, dict[str, Any]] = {status: {"description": description}}
    if model is not None:
        documented[status]["model"] = model
    chosen = errors if errors is not None else {**CALLER_ERRORS, **RETRY_LATER}
    # FastAPI documents a 422 of its own shape on every route with parameters unless told otherwise.
    for code, meaning in {401: UNAUTHORISED, 422: CALLER_ERRORS[422], **chosen}.items():
        documented[code] = {"model": ErrorResponse, "description": meaning}
    return documented


def install(app: FastAPI, bodies: list[type[BaseModel]]) -> None:
    """Generate the document once, with the request ``bodies`` among its component schemas."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            _, definitions = models_json_schema([(model, "validation") for model in bodies], ref_template=REF)
            document.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
