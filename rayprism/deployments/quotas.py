"""Per-key quotas (``rate`` of a key entry; docs/api.md, "Quotas"), held by each serving replica.

Requests are counted by a pure ASGI layer behind the key check, before the body is read, so a throttled key
costs a header scan and a 429, as an unknown key costs a 401. Inputs are only known once the body is parsed:
:func:`charge_inputs` counts them right after parsing, before anything is tokenised or encoded. Each replica
holds its share of a key's quota (the configured rate divided by ``deployment.replicas.max``): no replica asks
another, so a throttled request never waits on a shared counter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

from starlette.requests import Request

from rayprism.deployments.auth import STATE_KEY
from rayprism.deployments.token_bucket import TokenBucket, retry_after_s
from rayprism.platform.api.keys import ApiKey
from rayprism.platform.api.requests import DocumentsRequest, EmbeddingRequest, RerankRequest
from rayprism.platform.config import RateConfig
from rayprism.platform.errors import PayloadTooLargeError, RateLimitedError

Limit = Literal["requests", "inputs"]
QUOTA_STATE = "quota"
"""Where an admitted request's :class:`KeyQuota` waits for its route to count inputs (``request.state.quota``)."""


@dataclass
class KeyQuota:
    """One key's buckets in this replica; ``throttled(key, limit)`` counts each refusal."""

    key: str
    requests: TokenBucket | None
    inputs: TokenBucket | None
    throttled: Callable[[str, Limit], None]

    def charge(self, limit: Limit, n: int) -> None:
        """Take ``n`` of ``limit``, or raise the 429 that says when to come back."""
        bucket = self.requests if limit == "requests" else self.inputs
        if bucket is None:
            return
        wait_s = bucket.take(n, time.monotonic())
        if wait_s == 0:
            return
        self.throttled(self.key, limit)
        if wait_s == float("inf"):
            raise PayloadTooLargeError(
                f"this key ({self.key}) may send at most {int(bucket.capacity)} inputs at once in this replica "
                f"(its rate.inputs_per_s × burst_s, shared by the replicas): send {n} in smaller requests")
        raise RateLimitedError(f"this key ({self.key}) is over its {limit} per second quota; retry after "
                               f"{retry_after_s(wait_s)} s", retry_after_s=retry_after_s(wait_s))


def key_quotas(rates: dict[str, RateConfig], replicas: int, throttled: Callable[[str, Limit], None]
               ) -> dict[str, KeyQuota]:
    """Each rated key's buckets, holding ``1/replicas`` of its configured rate and burst."""
    now = time.monotonic()

    def bucket(per_s: float | None, burst_s: float) -> TokenBucket | None:
        return None if per_s is None else TokenBucket(per_s / replicas, per_s * burst_s / replicas, now)

    return {name: KeyQuota(name, bucket(rate.requests_per_s, rate.burst_s), bucket(rate.inputs_per_s, rate.burst_s),
                           throttled) for name, rate in rates.items()}


def inputs_of(parsed: object) -> int:
    """The inputs a parsed body counts against ``inputs_per_s`` (0 for routes that embed none by the caller's count)."""
    if isinstance(parsed, EmbeddingRequest):
        return len(parsed.input)
    if isinstance(parsed, (RerankRequest, DocumentsRequest)):
        return len(parsed.documents)
    return 0


def charge_inputs(request: Request, parsed: object) -> None:
    """Count a parsed body's inputs against its key's quota (none when the key has no inputs limit)."""
    quota: KeyQuota | None = request.scope.get("state", {}).get(QUOTA_STATE)
    count = inputs_of(parsed)
    if quota is not None and count:
        quota.charge("inputs", count)


class QuotaGuard:
    """Counts each request of a rated key before its body is read; refuses it with ``refuse(error)`` when over."""

    def __init__(self, app, *, quotas: dict[str, KeyQuota], refuse: Callable):
        self._app = app
        self._quotas = quotas
        self._refuse = refuse

    async def __call__(self, scope, receive, send) -> None:
        key: ApiKey | None = scope.get("state", {}).get(STATE_KEY) if scope["type"] == "http" else None
        quota = self._quotas.get(key.name) if key is not None else None
        if quota is not None:
            try:
                quota.charge("requests", 1)
            except RateLimitedError as error:
                await self._refuse(error)(scope, receive, send)
                return
            scope["state"][QUOTA_STATE] = quota
        await self._app(scope, receive, send)
