"""What one call to the service is (method, path, body, the type its answer is read into) and the policy both
clients follow around it: which answers are retried, how long to wait, how an answer becomes a typed object.
The sync and async clients differ only in how they send."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from rayprism.client._errors import RETRIABLE, retry_after_s, service_error
from rayprism.platform.api.requests import request_error
from rayprism.platform.errors import RayprismError

logger = logging.getLogger("rayprism.client")

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    body: Any = None
    answer: Any = None
    """The type the answer's JSON is validated into; None: the JSON as it came; ``str``: the body's text;
    ``bytes``: the body's bytes."""
    finish: Callable[[Any], T] | None = None
    """Turns the validated answer into what the method returns."""
    accept: frozenset[int] = frozenset()
    """Error statuses whose body is the answer itself (``/health`` says why it is not ready with a 503)."""
    content_type: str | None = None
    """The media type of a ``body`` of bytes sent as they are (none: ``body`` is sent as JSON)."""

    def sent(self) -> dict[str, Any]:
        """The body as httpx's ``request`` takes it."""
        if self.content_type is None:
            return {"json": self.body}
        return {"content": self.body, "headers": {"Content-Type": self.content_type}}

    def read(self, response: httpx.Response) -> T:
        """The answer as a typed object, or the service's error raised as a typed error."""
        if response.status_code >= 400 and response.status_code not in self.accept:
            raise service_error(response)
        if self.answer is str:
            value: Any = response.text
        elif self.answer is bytes:
            value = response.content
        elif self.answer is None:
            value = response.json()
        else:
            value = _adapter(self.answer).validate_json(response.content)
        return self.finish(value) if self.finish else value


@cache
def _adapter(answer: Any) -> TypeAdapter:
    return TypeAdapter(answer)


def body(schema: type[BaseModel], **fields: Any) -> dict:
    """A request body checked by the service's own request model: a misspelt option or a wrong type fails here
    with the error the service would answer (an UnprocessableError naming the field). Arguments left as None
    are left out, so the service applies its defaults."""
    given = {key: value for key, value in fields.items() if value is not None}
    try:
        return schema.model_validate(given).model_dump(mode="json", exclude_unset=True)
    except ValidationError as error:
        raise request_error(error) from None


@dataclass(frozen=True)
class Retries:
    """When to send a call again: on 429, 502 and 503 (the service said "later"), waiting what its ``Retry-After``
    says, and on a connection that failed; each wait at most ``max_wait_s``."""

    max_retries: int = 8
    """Retries of an answer that said "later" before its error is raised."""
    connect_retries: int = 2
    """Retries of a request that reached no one (connection refused or reset, a timeout)."""
    backoff_s: float = 0.5
    """The first wait when the answer gives no ``Retry-After`` (and after a failed connection); doubled each time."""
    max_wait_s: float = 30.0

    def wait_s(self, call: Call, attempt: int, outcome: httpx.Response | httpx.TransportError) -> float | None:
        """Seconds to wait before sending ``call`` again after ``attempt`` (from 0) ended in ``outcome``; None:
        ``outcome`` is final."""
        if isinstance(outcome, httpx.TransportError):
            if attempt >= self.connect_retries:
                raise RayprismError(f"cannot reach {outcome.request.url}: {outcome}") from outcome
            wait_s, why = self.backoff_s * 2**attempt, type(outcome).__name__
        else:
            if outcome.status_code not in RETRIABLE or outcome.status_code in call.accept or \
                    attempt >= self.max_retries:
                return None
            told = retry_after_s(outcome)
            wait_s = told if told is not None else self.backoff_s * 2**attempt
            why = f"{outcome.status_code}" + (f" with Retry-After {told:g}" if told is not None else "")
        wait_s = min(wait_s, self.max_wait_s)
        logger.info("%s %s: %s; retrying in %.2f s (retry %d)", call.method, call.path, why, wait_s, attempt + 1)
        return wait_s
