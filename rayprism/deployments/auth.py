"""API keys: ``Authorization: Bearer <key>`` on every ``/v1`` route, as OpenAI clients send it, and the
scope each route needs (:mod:`rayprism.deployments.scopes`).

A pure ASGI layer in front of the app: a refused request costs a header scan, never a body
read, and unknown ``/v1`` paths are refused too (no probing for routes without a key). Keys
are compared in constant time, each one, so timing does not tell how much of a key matched.
Every refusal is an audit record naming the key (``unknown`` for a 401), never the key itself.
"""

from __future__ import annotations

from typing import Callable

from starlette.requests import Request
from starlette.routing import BaseRoute

from rayprism.deployments.audit import NO_KEY, UNKNOWN_KEY, AuditTrail, audit_record
from rayprism.deployments.console import CONSOLE_URL
from rayprism.deployments.request_ids import request_id_of
from rayprism.deployments.scopes import need_of
from rayprism.platform.api.keys import ApiKey, find_key
from rayprism.platform.errors import ForbiddenError, RayprismError, UnauthorizedError

PROTECTED_PREFIX = "/v1"
OPEN_PATHS = ("/health", "/metrics")
"""Probes and scrapers reach these without a key unless the operator protects them too."""
ALWAYS_OPEN_PREFIX = CONSOLE_URL
"""The console's static files hold no data, and a browser loading a page sends no key: every call the console
makes sends one (``api_key_routes: all`` included)."""
STATE_KEY = "api_key"
"""Where an admitted request's :class:`ApiKey` waits for its route (``request.state.api_key``)."""


def presented_key(header: bytes | None) -> bytes:
    return header[len(b"Bearer "):].strip() if header and header[:7].lower() == b"bearer " else b""


def key_of(request: Request) -> ApiKey | None:
    """The key that was let through for ``request``; None when the service takes no keys."""
    return getattr(request.state, STATE_KEY, None)


def key_name(request: Request) -> str:
    """The name audit records give the request's key (``-`` when the service takes no keys)."""
    key = key_of(request)
    return NO_KEY if key is None else key.name


def may_read(request: Request, name: str) -> bool:
    """Whether the request's key may read the collection or alias ``name`` (what its lists show)."""
    key = key_of(request)
    return key is None or key.may_read(name)


class ApiKeyGuard:
    def __init__(self, app, *, keys: list[ApiKey], routes: list[BaseRoute], protect_open_paths: bool,
                 refuse: Callable, audit: AuditTrail):
        """``routes``: the app's routes, matched to learn what a request needs. ``refuse(error)``: the ASGI
        response for a refused request (the app's own error shape). ``audit``: where refusals are recorded."""
        self._app = app
        self._keys = keys
        self._routes = routes
        self._protect_open_paths = protect_open_paths
        self._refuse = refuse
        self._audit = audit

    def _protects(self, path: str) -> bool:
        if path == ALWAYS_OPEN_PREFIX or path.startswith(ALWAYS_OPEN_PREFIX + "/"):
            return False
        if path in OPEN_PATHS:
            return self._protect_open_paths
        return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/") or self._protect_open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self._protects(scope["path"]):
            header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
            key = find_key(self._keys, presented_key(header))
            route, need = need_of(self._routes, scope)
            error: RayprismError | None = None
            if key is None:
                error = UnauthorizedError("no API key: send one as 'Authorization: Bearer <key>'" if header is None
                                          else "a valid API key is required: send it as 'Authorization: Bearer <key>'")
            elif not key.allows(need):
                error = ForbiddenError(f"this key ({key.name}) lacks scope {need}")
            if error is not None:
                self._audit.write(audit_record(
                    key=key.name if key else UNKNOWN_KEY, method=scope["method"], route=route, path=scope["path"],
                    target=need.target, scope=str(need), outcome=f"denied {error.http_status}",
                    request_id=request_id_of(scope)))
                response = self._refuse(error)
                response.headers["WWW-Authenticate"] = "Bearer" if key is None else "Bearer error=\"insufficient_scope\""
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[STATE_KEY] = key
        await self._app(scope, receive, send)
