"""A lasting 503 through the SDK: ``rayprism serve`` whose multi-vector collection outgrows ``store.cache_max_rows``
keeps its token vectors out of memory, so every search of it answers NotReadyError (503, ``Retry-After: 2``).
The SDK raises it typed with no retries, and with N it waits the service's Retry-After N times, then raises."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from rayprism import Client, NotReadyError, RetryLaterError
from tests.integration.test_sdk import metric_value

COLLECTION = "late"
SEARCH = {"query": "a window manager", "k": 3}
RETRY_AFTER_S = NotReadyError.default_retry_after_s


@pytest.fixture()
def unmirrored(own_service):
    """The URL of a `rayprism serve` (its own Ray, as a user starts it) that mirrors at most one row, with two
    documents in its multi-vector collection: they are never all in memory."""
    url, _ = own_service
    with Client(url) as client:
        client.upsert(COLLECTION, [{"id": "wm", "text": "a tiling window manager"},
                                   {"id": "ed", "text": "a text editor for the terminal"}])
    return url


def test_a_lasting_503_is_raised_typed_and_retried_after_its_retry_after(unmirrored, caplog):
    plain = httpx.post(f"{unmirrored}/v1/collections/{COLLECTION}/search", json=SEARCH, timeout=60)
    assert plain.status_code == 503 and plain.headers["Retry-After"] == str(RETRY_AFTER_S), plain.text
    assert "cache_max_rows" in plain.json()["error"]["message"]

    with Client(unmirrored, max_retries=0) as impatient:
        started = time.monotonic()
        with pytest.raises(NotReadyError) as refused:
            impatient.search(COLLECTION, SEARCH["query"], k=SEARCH["k"])
        assert time.monotonic() - started < RETRY_AFTER_S  # raised at once: nothing waited
    assert isinstance(refused.value, RetryLaterError)
    assert refused.value.http_status == 503 and refused.value.retry_after_s == RETRY_AFTER_S
    assert refused.value.detail == plain.json()["error"]  # the body the service sends, carried as it came

    retries = 2
    refusals = metric_value(unmirrored, "rayprism_requests_total", endpoint="search", status="503")
    caplog.set_level(logging.INFO, logger="rayprism.client")
    with Client(unmirrored, max_retries=retries) as patient:
        started = time.monotonic()
        with pytest.raises(NotReadyError) as still:
            patient.search(COLLECTION, SEARCH["query"], k=SEARCH["k"])
        waited_s = time.monotonic() - started
    assert still.value.retry_after_s == RETRY_AFTER_S
    logged = [record.getMessage() for record in caplog.records if record.name == "rayprism.client"]
    assert logged == [f"POST /v1/collections/{COLLECTION}/search: 503 with Retry-After {RETRY_AFTER_S}; "
                      f"retrying in {RETRY_AFTER_S:.2f} s (retry {attempt})" for attempt in range(1, retries + 1)]
    assert waited_s >= retries * RETRY_AFTER_S
    assert metric_value(unmirrored, "rayprism_requests_total", endpoint="search", status="503") \
        == refusals + retries + 1  # the service itself refused the first request and each retry
