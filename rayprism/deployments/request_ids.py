"""Request ids: ``X-Request-Id`` taken from the request or made, returned on every response, in every log line.

Inside Ray Serve, Serve's own HTTP layer (outside this app) takes the header as the request's id, makes one
(a uuid4) when it is absent, puts it in the request's headers and adds it to every response, and Serve's replica
log lines carry it. This layer then only checks it: an id that is not printable ASCII of at most 128 characters
is replaced, for our records and Serve's log lines, by a new uuid4 hex (the response still echoes what the caller
sent: Serve's layer answers it, outside ours). Outside Serve (an app in a test's process) this layer takes or
makes the id and adds the response header itself.
"""

from __future__ import annotations

import dataclasses
import uuid

from starlette.datastructures import MutableHeaders

HEADER = "x-request-id"
MAX_LENGTH = 128
STATE_REQUEST_ID = "request_id"
"""Where the id waits for routes and audit records (``request.state.request_id``)."""


def valid_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_LENGTH and value.isascii() and value.isprintable()


def request_id_of(scope: dict) -> str:
    """The request's id, once :class:`RequestIds` has seen it (``-`` outside it)."""
    return scope.get("state", {}).get(STATE_REQUEST_ID, "-")


def _serve_context():
    """Serve's request context variable, when this runs inside a Serve replica (None outside one: a test's
    process that once ran Serve code may still hold a request context, but never a replica's)."""
    try:
        from ray.serve import context
    except ImportError:
        return None
    if context._get_internal_replica_context() is None:
        return None
    return context._serve_request_context  # Serve's own: its log filter reads the request id from here


class RequestIds:
    def __init__(self, app):
        self._app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER.encode()), b"").decode("latin-1")
        variable = _serve_context()
        serving = variable.get() if variable is not None else None
        request_id = given if valid_request_id(given) else uuid.uuid4().hex
        scope.setdefault("state", {})[STATE_REQUEST_ID] = request_id
        if serving is not None:  # Serve answers the header
            if serving.request_id != request_id:
                variable.set(dataclasses.replace(serving, request_id=request_id))
            await self._app(scope, receive, send)
            return

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self._app(scope, receive, send_with_id)
