"""The one table of what each route needs from an API key (docs/api.md, "API keys and scopes").

A request is matched to its route by the app's own router, so the table is keyed by the paths the routes
are declared with, and the collection a request is about is the ``name`` path parameter as the caller
wrote it: a request to an alias is judged by the alias's name, never by the collection behind it (a key
for ``docs`` reaches whatever ``docs`` points to, and an alias move needs ``admin``).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match

from rayprism.platform.api.keys import Action, Need

ROUTE_SCOPES: dict[tuple[str, str], Action] = {
    ("POST", "/v1/embeddings"): "embed",
    ("POST", "/v1/rerank"): "embed",
    ("GET", "/v1/keys/me"): "key",  # what the presented key may do: the console hides what it may not
    ("GET", "/v1/models"): "key",
    ("GET", "/v1/models/{name}"): "key",
    ("GET", "/v1/collections"): "read",  # any read scope: the answer lists what the key may read
    ("POST", "/v1/collections"): "admin",
    ("GET", "/v1/collections/{name}"): "read",
    ("DELETE", "/v1/collections/{name}"): "admin",
    ("POST", "/v1/collections/{name}/documents"): "write",
    ("GET", "/v1/collections/{name}/documents"): "read",
    ("GET", "/v1/collections/{name}/documents/{document_id:path}"): "read",
    ("GET", "/v1/collections/{name}/map"): "read",
    ("DELETE", "/v1/collections/{name}/documents"): "write",
    ("POST", "/v1/collections/{name}/search"): "read",
    ("PUT", "/v1/collections/{name}/search_defaults"): "admin",  # changes how every caller's searches run
    ("DELETE", "/v1/collections/{name}/search_defaults"): "admin",
    ("POST", "/v1/collections/{name}/reembed"): "admin",
    ("GET", "/v1/collections/{name}/reembed"): "admin",
    ("POST", "/v1/collections/{name}/rollback"): "admin",
    ("GET", "/v1/reembed/{job_id}"): "admin",
    ("POST", "/v1/collections/{name}/snapshots"): "admin",  # a backup reads everything, aliases included
    ("GET", "/v1/snapshots/{snapshot_id}/pages/{page}"): "admin",
    ("DELETE", "/v1/snapshots/{snapshot_id}"): "admin",
    ("POST", "/v1/collections/{name}/rows"): "admin",  # a restore writes stored rows, unchecked by any model
    ("GET", "/v1/aliases"): "read",  # any read scope: the answer lists the aliases the key may read
    ("POST", "/v1/aliases"): "admin",
    ("DELETE", "/v1/aliases/{name}"): "admin",
    ("POST", "/v1/files"): "embed",  # the OpenAI Batch API: files and batches of embeddings requests
    ("GET", "/v1/files"): "embed",
    ("GET", "/v1/files/{file_id}"): "embed",
    ("DELETE", "/v1/files/{file_id}"): "embed",
    ("GET", "/v1/files/{file_id}/content"): "embed",
    ("POST", "/v1/batches"): "embed",
    ("GET", "/v1/batches"): "embed",
    ("GET", "/v1/batches/{batch_id}"): "embed",
    ("POST", "/v1/batches/{batch_id}/cancel"): "embed",
}
"""(method, declared path) → the action it needs; ``read``/``write`` of the path's ``name``."""


def need_of(routes: list[BaseRoute], scope: dict) -> tuple[str, Need]:
    """(the route's declared path, or the request's path when none matches; what the request needs).

    A path no route answers needs any valid key (the app then says 404 or 405); a ``/v1`` route missing
    from the table needs ``admin``, so a route added without a line here is closed, not open."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            path = getattr(route, "path", scope["path"])
            default = "admin" if path.startswith("/v1/") else "key"
            action = ROUTE_SCOPES.get((scope["method"], path), default)
            target = child.get("path_params", {}).get("name") if action in ("read", "write") else None
            return path, Need(action, target)
    return scope["path"], Need("key")
