"""One exception root for everything rayprism raises on purpose.

Each class carries what the caller needs to act on it: the HTTP status it maps to,
whether retrying can help, and the OpenAI error ``type``/``code``. The HTTP layer
turns any :class:`RayprismError` into ``{"error": {...}}`` in one place; anything
else is our fault and becomes a 500 without details.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict


class ErrorDetail(TypedDict):
    message: str
    type: str
    """``invalid_request_error``, ``rate_limit_error``, ``service_unavailable`` or ``server_error``."""
    param: str | None
    """The request field at fault, when one is."""
    code: str | None
    errors: NotRequired[list[dict[str, Any]]]
    """For a batch of documents refused whole: one ``{index, field, message}`` per problem."""


class ErrorResponse(TypedDict):
    """Every error, from every route: OpenAI's error shape."""

    error: ErrorDetail


# pydantic's ``with_config``, without importing pydantic here (``import rayprism`` stays light): the
# attribute docstrings above become the descriptions of the HTTP schema's error shape.
ErrorDetail.__pydantic_config__ = ErrorResponse.__pydantic_config__ = {"use_attribute_docstrings": True}


class RayprismError(Exception):
    http_status: int = 500
    retriable: bool = False
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def is_caller_mistake(self) -> bool:
        """A 4xx: the request was wrong (or came too soon), not our code, so a log line says enough and a
        traceback would only bury our own faults."""
        return 400 <= self.http_status < 500

    def to_body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorDetail(message=self.message, type=self.error_type, param=self.param,
                                               code=self.code))


class ConfigError(RayprismError):
    """A config file or value is invalid; raised before anything starts."""

    http_status = 400
    error_type = "invalid_request_error"
    code = "invalid_config"


class InvalidInputError(RayprismError):
    http_status = 400
    error_type = "invalid_request_error"
    code = "invalid_input"


class UnprocessableError(InvalidInputError):
    """The body parsed but does not match the request schema."""

    http_status = 422


class UnauthorizedError(RayprismError):
    """No API key, or not one of the service's."""

    http_status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class ForbiddenError(RayprismError):
    """A valid API key without the scope a request needs; the message names that scope."""

    http_status = 403
    error_type = "invalid_request_error"
    code = "insufficient_scope"


class NotFoundError(RayprismError):
    http_status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ConflictError(RayprismError):
    http_status = 409
    error_type = "invalid_request_error"
    code = "conflict"


class PayloadTooLargeError(RayprismError):
    http_status = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class RetryLaterError(RayprismError):
    """Nothing is wrong with the request: it can succeed later (sent as ``Retry-After``)."""

    retriable = True
    default_retry_after_s = 1

    def __init__(self, message: str, *, retry_after_s: int | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s or self.default_retry_after_s


class OverloadedError(RetryLaterError):
    """The queue is full: the caller should back off and retry."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "overloaded"


class RateLimitedError(RetryLaterError):
    """An API key went over its quota (``rate`` of its entry): it may send again after ``Retry-After``."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class NotReadyError(RetryLaterError):
    """A model or store is still starting; retry shortly."""

    http_status = 503
    error_type = "service_unavailable"
    code = "not_ready"
    default_retry_after_s = 2


class StoreError(RayprismError):
    """The vector store failed on a well-formed request."""

    http_status = 502
    retriable = True
    error_type = "server_error"
    code = "store_error"


class StoreFullError(StoreError):
    """The store's disk has (nearly) no room left: the write was refused whole, nothing it carried is stored,
    and what was acknowledged before is kept. Retrying helps only once space is freed."""

    http_status = 507
    retriable = False
    code = "store_full"


class MissingDependencyError(RayprismError):
    """An optional dependency is needed for this feature; the message says what to install."""

    code = "missing_dependency"


def unwrap(error: BaseException) -> RayprismError | None:
    """Our own error inside a Ray task/actor error (Ray keeps it as ``cause``), or None."""
    if isinstance(error, RayprismError) and not hasattr(error, "cause"):
        return error
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, RayprismError) else None


def one_line(error: BaseException) -> str:
    """What went wrong, in one line for a person: our own error's message (also inside a Ray error), else the
    innermost error's type and the last line of its text (a Ray error's text is the remote traceback)."""
    own = unwrap(error)
    if own is not None:
        return own.message
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {last_line(str(cause))}"


def last_line(message: str) -> str:
    """A message's last non-empty line: where a traceback's text says what was raised."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"
