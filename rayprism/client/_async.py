"""The asynchronous client: the same routes as :class:`~rayprism.client.Client`, each an awaitable, over one
``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from rayprism.client._calls import Call
from rayprism.client._connection import Connection
from rayprism.client._routes import Routes

T = TypeVar("T")


class AsyncClient(Routes, Connection):
    """The service's HTTP API for asyncio code: ``await client.search(...)``; ``async with`` closes it."""

    def _open(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, again while the service says "later" (within :attr:`retries`), and read its answer."""
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = await self._http.request(
                    call.method, call.path, **call.sent())
            except httpx.TransportError as error:
                outcome = error
            wait_s = self.retries.wait_s(call, attempt, outcome)
            if wait_s is None:
                return call.read(outcome)
            await asyncio.sleep(wait_s)
            attempt += 1

    async def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """Any route, its JSON answer as it came (retried and its errors raised as every call's are)."""
        return await self.send(Call(method, path, body))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
