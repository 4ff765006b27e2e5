"""The service's error answers, raised as the typed errors of :mod:`rayprism.platform.errors`.

Each error the SDK raises is both the typed error its status names (``except NotFoundError``) and a
:class:`ServiceError` (``except ServiceError`` catches whatever the service refused), with what the body said.
"""

from __future__ import annotations

from functools import cache

import httpx

from rayprism.platform import errors
from rayprism.platform.errors import (
    ConflictError,
    ErrorDetail,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RayprismError,
    StoreError,
    StoreFullError,
    UnauthorizedError,
    UnprocessableError,
)

_BY_STATUS = {cls.http_status: cls for cls in (InvalidInputError, UnauthorizedError, ForbiddenError, NotFoundError,
                                               ConflictError, PayloadTooLargeError, UnprocessableError, OverloadedError, StoreError,
                                               StoreFullError, NotReadyError)}
"""The typed error a status names when the body's ``code`` names none more precisely."""
_BY_CODE = {(value.http_status, value.code): value for value in vars(errors).values()
            if isinstance(value, type) and issubclass(value, RayprismError) and value.code is not None}
"""Every typed error with a code, by (status, code): ``(400, "invalid_config")`` is a ConfigError."""
RETRIABLE = frozenset(status for status, cls in _BY_STATUS.items() if cls.retriable)
"""Statuses worth a retry: overload (429), a store that failed or is restarting (502, 503)."""


class ServiceError(RayprismError):
    """The service answered with an error. ``message`` says which call, its status and the service's own message;
    ``detail`` is the body's ``error`` object."""

    detail: ErrorDetail | None
    """The body's ``{"message", "type", "param", "code"}`` (None when the body was not the error shape)."""
    retry_after_s: float | None
    """The answer's ``Retry-After``, if it had one."""
    document_problems: dict[int, str] | None
    """For a batch refused because of some of its documents: index → reason."""


@cache
def _service_error_class(typed: type[RayprismError]) -> type[ServiceError]:
    """``typed`` and ServiceError in one class, named as ``typed`` (made once per typed error)."""
    return type(typed.__name__, (typed, ServiceError), {"__module__": __name__, "__doc__": typed.__doc__})


def service_error(response: httpx.Response) -> ServiceError:
    """The typed error for an error answer."""
    try:
        detail = response.json()["error"]
        message = detail["message"]
    except (ValueError, KeyError, TypeError):
        detail, message = None, response.text[:500] or response.reason_phrase
    code = (detail or {}).get("code")
    typed = _BY_CODE.get((response.status_code, code)) or _BY_STATUS.get(response.status_code)
    cls = ServiceError if typed is None else _service_error_class(typed)
    error = cls(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")
    error.http_status = response.status_code
    error.param = (detail or {}).get("param")
    if code is not None:
        error.code = code
    error.detail = detail
    error.retry_after_s = retry_after_s(response)
    error.document_problems = None
    if code == "invalid_documents":
        error.document_problems = {}
        for problem in detail.get("errors", []):
            where = f"{problem['field']}: " if problem.get("field") else ""
            error.document_problems.setdefault(problem["index"], where + problem["message"])
    return error


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the service sends seconds; an HTTP date counts as absent)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
