"""Request in, response out, for every route: bounded bodies, JSON answers, the error shape, and per-request
metrics (count, status, latency) whatever way a request ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Callable

import orjson
from fastapi import Request
from starlette.responses import Response

from rayprism.deployments.quotas import charge_inputs
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.api.requests import RequestT, parse_body
from rayprism.platform.errors import ErrorDetail, ErrorResponse, PayloadTooLargeError, RayprismError, RetryLaterError

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=_JSON_OPTIONS), status_code, headers, "application/json")


def error_response(error: RayprismError) -> Response:
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RetryLaterError) else None
    return json_response(error.to_body(), error.http_status, headers)


def http_error_body(status: int, message: str) -> ErrorResponse:
    error_type = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return ErrorResponse(error=ErrorDetail(message=message, type=error_type, param=None, code=code))


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed the limit."""
    too_large = PayloadTooLargeError(f"request body exceeds {limit_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


LARGE_BODY_BYTES = 64 * 1024
"""Bodies above this are parsed in a thread, so the event loop keeps answering /health and small requests."""
CLIENT_GONE = 499
"""The status recorded (never sent) for a request whose client disconnected first, as nginx logs it."""


async def parsed_body(request: Request, schema: type[RequestT], limit_bytes: int) -> RequestT:
    """The body parsed into ``schema``, its inputs then counted against the key's quota (before any tokenising)."""
    body = await read_body(request, limit_bytes)
    parsed = await asyncio.to_thread(parse_body, schema, body) if len(body) > LARGE_BODY_BYTES else (
        parse_body(schema, body))
    charge_inputs(request, parsed)
    return parsed


@contextlib.asynccontextmanager
async def cancelled_if_client_leaves(request: Request) -> AsyncIterator[None]:
    """Cancel the request's work when its client disconnects, so nothing computes for nobody (the
    batcher drops queued inputs of a cancelled request). Call once the body has been read."""
    handler = asyncio.current_task()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


def status_of(error: BaseException | None) -> int:
    """The status a request ended with: 200, the error's own, 499 for a client gone, 500 for our fault."""
    if error is None:
        return 200
    if isinstance(error, asyncio.CancelledError):
        return CLIENT_GONE
    return error.http_status if isinstance(error, RayprismError) else 500


class Observed:
    """Records count, status and latency of one request, whatever way it ends.

    ``model`` is asked for the model label when the request ends, once it is known.
    """

    def __init__(self, service: EmbeddingService, endpoint: str, model: Callable[[], str]):
        self._metrics = service.metrics
        self._endpoint = endpoint
        self._model = model

    def __enter__(self) -> Observed:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = status_of(exc)
        model = self._model()
        self._metrics.requests(model, self._endpoint, str(status)).inc()
        self._metrics.latency(model, self._endpoint).observe(time.perf_counter() - self._started)
