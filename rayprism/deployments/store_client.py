"""Both ends of a call to the store deployment: the class Serve runs, and the client serving replicas use.

The client is derived from :class:`~rayprism.deployments.store.StoreReplica`: each public coroutine of the
replica is one client method of the same name, signature and docstring, so adding a store method is one
edit. Services annotate their store as :data:`Store` and get either the client or, in unit tests, a
replica in their own process: both answer the same calls with the same values and errors.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ray import serve
from ray.exceptions import RayActorError

from rayprism.deployments.metrics import ServiceMetrics
from rayprism.deployments.store import StoreReplica, public_coroutines
from rayprism.platform.constants import STORE_DEPLOYMENT_NAME
from rayprism.platform.errors import NotReadyError, RayprismError, unwrap

replica_log = logging.getLogger("ray.serve")
"""Serve's own logger: what a replica logs there lands in its log file with the request's id."""

Store = StoreReplica
"""What a service calls the store through: a :class:`StoreClient` (the same methods) or a replica in process."""


def store_methods(replica: type = StoreReplica) -> dict[str, Callable]:
    """The store's calls: every public coroutine method of ``replica`` (its own and its mixins')."""
    return public_coroutines(replica)


@dataclass(frozen=True)
class CallerMistake:
    """A caller's mistake (a 4xx :class:`RayprismError`: a missing collection, a bad filter), returned over the
    store's handle instead of raised.

    Serve logs every exception a replica method raises as "Request failed." with its traceback
    (``_handle_errors_and_metrics`` in ``ray/serve/_private/replica.py``): right for our own faults, noise that
    buries them for a caller's mistake, which the store logs as one line instead. :class:`StoreClient` raises
    the error again on the calling side, so callers of the store see no difference."""

    error: RayprismError


def _answering(method):
    """``method`` returning a caller's mistake as a :class:`CallerMistake`, after one log line; anything else,
    our own faults, still raises and gets Serve's traceback."""

    @functools.wraps(method)
    async def answering(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except RayprismError as error:
            if not error.is_caller_mistake:
                raise
            one_line = " ".join(error.message.split())  # Milvus's filter errors draw a caret under the column
            replica_log.info("%s: %d %s", method.__name__, error.http_status, one_line)
            return CallerMistake(error)

    return answering


def answering_caller_mistakes(replica: type) -> type:
    """The class Serve runs: ``replica`` with every public coroutine method :func:`_answering`. ``replica`` itself
    raises as usual where it runs in process (unit tests). A method calling another public one would get the
    value, not the exception, so methods share private helpers instead (``StoreReplica._job``)."""
    methods = {name: _answering(method) for name, method in store_methods(replica).items()}
    return type(replica.__name__, (replica,), methods)


StoreDeployment = serve.deployment(answering_caller_mistakes(StoreReplica), name=STORE_DEPLOYMENT_NAME)


class _HandleCalls:
    """Calls through the store deployment's handle, with the store's own errors unwrapped from Ray's (or
    raised from a :class:`CallerMistake`), a restarting store reported as 503, and every call's latency and
    failures in this replica's metrics."""

    def __init__(self, handle: Any, metrics: ServiceMetrics | None = None):
        self._handle = handle
        self._metrics = metrics

    async def _call(self, call: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            answer = await getattr(self._handle, call).remote(*args, **kwargs)
        except RayActorError:
            error: Exception = NotReadyError("the store is restarting; retry shortly")
        except Exception as failure:  # a deployment call wraps the store's own error: raise that one
            error = unwrap(failure) or failure
        else:
            if not isinstance(answer, CallerMistake):
                return answer
            error = answer.error
        finally:
            if self._metrics is not None:
                self._metrics.store_latency(call).observe(time.perf_counter() - started)
        if self._metrics is not None:
            status = error.http_status if isinstance(error, RayprismError) else 500
            self._metrics.store_errors(call, str(status)).inc()
        raise error


def _calling(name: str, method: Callable) -> Callable:
    """The client method for the store's ``name``: same signature and docstring, called over the handle."""

    @functools.wraps(method)
    async def call(self: _HandleCalls, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, *args, **kwargs)

    return call


StoreClient = type("StoreClient", (_HandleCalls,), {
    "__doc__": "The store deployment's methods (:class:`~rayprism.deployments.store.StoreReplica`'s), over its "
               "Serve handle: ``StoreClient(handle, metrics)``.",
    "__module__": __name__,
    **{name: _calling(name, method) for name, method in store_methods().items()},
})
