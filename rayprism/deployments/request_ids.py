"""Request ids: ``X-Request-Id`` taken from the request or made, returned on every response, in every log line.

Ray Serve's direct ingress already takes the header as the request's id (and makes one when it is absent),
and its replica log lines carry that id. This outermost ASGI layer keeps one id per request: the caller's when
it is printable ASCII of at most 128 characters, Serve's own when the caller sent none, else a new uuid4 hex;
Serve's request context is given that id, so log lines written while the request runs show it.
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
    """Serve's request context variable, when this runs inside a Serve replica (None outside one)."""
    try:
        from ray.serve import context
    except ImportError:
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
        if valid_request_id(given):
            request_id = given
        elif not given and serving is not None and valid_request_id(serving.request_id):
            request_id = serving.request_id  # Serve made it: its access log line shows the same id
        else:
            request_id = uuid.uuid4().hex
        if serving is not None and serving.request_id != request_id:
            variable.set(dataclasses.replace(serving, request_id=request_id))
        scope.setdefault("state", {})[STATE_REQUEST_ID] = request_id

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self._app(scope, receive, send_with_id)
