"""API keys: ``Authorization: Bearer <key>`` on every ``/v1`` route, as OpenAI clients send it.

A pure ASGI layer in front of the app: a refused request costs a header scan, never a body
read, and unknown ``/v1`` paths are refused too (no probing for routes without a key). Keys
are compared in constant time, each one, so timing does not tell how much of a key matched.
"""

from __future__ import annotations

import hmac
from typing import Callable

from rayprism.platform.errors import UnauthorizedError

PROTECTED_PREFIX = "/v1"
OPEN_PATHS = ("/health", "/metrics")
"""Probes and scrapers reach these without a key unless the operator protects them too."""


def is_authorised(header: bytes | None, keys: list[bytes]) -> bool:
    presented = header[len(b"Bearer "):].strip() if header and header[:7].lower() == b"bearer " else b""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


class ApiKeyGuard:
    def __init__(self, app, *, keys: list[str], protect_open_paths: bool, refuse: Callable):
        """``refuse(error)``: the ASGI response for a refused request (the app's own error shape)."""
        self._app = app
        self._keys = [key.encode() for key in keys]
        self._protect_open_paths = protect_open_paths
        self._refuse = refuse

    def _protects(self, path: str) -> bool:
        if path in OPEN_PATHS:
            return self._protect_open_paths
        return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/") or self._protect_open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self._protects(scope["path"]):
            header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
            if not is_authorised(header, self._keys):
                message = "a valid API key is required: send it as 'Authorization: Bearer <key>'"
                if header is None:
                    message = "no API key: send one as 'Authorization: Bearer <key>'"
                response = self._refuse(UnauthorizedError(message))
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
