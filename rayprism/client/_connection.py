"""What both clients are made of: the service's URL, the API key, timeouts and the retry policy, read once when
the client is made."""

from __future__ import annotations

import os
from typing import Any

import httpx

from rayprism.client._calls import Retries
from rayprism.platform.constants import API_KEY_VARIABLE, URL_VARIABLE

DEFAULT_URL = "http://127.0.0.1:8000"


class Connection:
    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 timeout_s: float | httpx.Timeout = 300, max_retries: int = Retries.max_retries,
                 max_wait_s: float = Retries.max_wait_s):
        """``url``: default ``$RAYPRISM_URL``, else ``http://127.0.0.1:8000``. ``api_key``: sent as
        ``Authorization: Bearer``; default ``$RAYPRISM_API_KEY``. ``timeout_s``: of each request (an
        ``httpx.Timeout`` sets connect, read and write apart). ``max_retries``: of an answer that said "later"
        (429, 502, 503), each after its ``Retry-After`` (at most ``max_wait_s``)."""
        url = url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
        api_key = api_key or os.environ.get(API_KEY_VARIABLE)
        self.retries = Retries(max_retries=max_retries, max_wait_s=max_wait_s)
        self._http = self._open(base_url=url.rstrip("/"), timeout=timeout_s,
                                headers={"Authorization": f"Bearer {api_key}"} if api_key else None)

    def _open(self, **options: Any) -> Any:
        """The httpx client (sync or async) this client sends with."""
        raise NotImplementedError

    @property
    def http(self) -> Any:
        """The ``httpx.Client`` (or ``AsyncClient``) underneath: its event hooks, transport and limits are httpx's."""
        return self._http

    @property
    def url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return str(self._http.base_url).rstrip("/")
