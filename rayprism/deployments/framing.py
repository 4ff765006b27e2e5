"""Malformed HTTP framing answered in the API's error shape.

uvicorn answers a request it cannot even frame (a Content-Length shorter than the body sent,
a broken request line) itself, before any application code runs, in plain text. Every answer
of this service is ``{"error": {...}}``, so the protocol classes' one method for that answer is
replaced, once per process, with one that writes the same status in that shape.
"""

from __future__ import annotations

import orjson

_BODY = orjson.dumps({"error": {
    "message": "malformed HTTP request (is Content-Length the body's length?)",
    "type": "invalid_request_error", "param": None, "code": "malformed_request",
}})


def _send_400_response(protocol, msg: str) -> None:
    protocol.transport.write(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
    )
    protocol.transport.close()


def answer_framing_errors_as_json() -> None:
    from uvicorn.protocols.http import h11_impl

    protocols = [h11_impl.H11Protocol]
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional; uvicorn then uses h11
        pass
    else:
        protocols.append(httptools_impl.HttpToolsProtocol)
    for protocol in protocols:
        protocol.send_400_response = _send_400_response
