"""The synchronous client: every route (:class:`~rayprism.client._routes.Routes`) over one ``httpx.Client``, plus
ingest, which streams documents in batches and, when a batch is refused for some of its documents, reports those
(with their line numbers) and sends the rest again: one bad row never costs its neighbours."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rayprism.client._calls import Call
from rayprism.client._connection import Connection
from rayprism.client._errors import ServiceError
from rayprism.client._ingest import IngestSummary, Rejected, SourceDocument, batched, hashable
from rayprism.client._routes import Routes

T = TypeVar("T")


class Client(Routes, Connection):
    """The service's HTTP API, answers as typed objects (the shapes the service builds its bodies with)."""

    def _open(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def send(self, call: Call[T]) -> T:
        """Send ``call``, again while the service says "later" (within :attr:`retries`), and read its answer."""
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = self._http.request(
                    call.method, call.path, **call.sent())
            except httpx.TransportError as error:
                outcome = error
            wait_s = self.retries.wait_s(call, attempt, outcome)
            if wait_s is None:
                return call.read(outcome)
            time.sleep(wait_s)
            attempt += 1

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """Any route, its JSON answer as it came (retried and its errors raised as every call's are)."""
        return self.send(Call(method, path, body))

    def requests_by_replica(self, endpoint: str, *, scrapes: int = 20) -> dict[str, float]:
        """Each serving replica's own count of ``endpoint`` requests answered, by replica id. One scrape of
        ``/metrics`` reaches one replica (behind HAProxy or Serve's proxy), so this scrapes up to
        ``scrapes`` times to hear from every replica."""
        counts: dict[str, float] = {}
        for _ in range(scrapes):
            families = {family.name: family for family in text_string_to_metric_families(self.metrics())}
            replica = families["rayprism_replica_info"].samples[0].labels["replica"]
            counts[replica] = sum(sample.value for sample in families["rayprism_requests"].samples
                                  if sample.name == "rayprism_requests_total" and sample.labels["endpoint"] == endpoint)
        return counts

    def ingest(
        self,
        collection: str,
        documents: Iterable[SourceDocument],
        *,
        batch_size: int = 64,
        in_flight: int = 2,
        summary: IngestSummary | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_written: Callable[[list[SourceDocument]], None] | None = None,
    ) -> IngestSummary:
        """Upsert every document in batches, ``in_flight`` requests at a time so the service
        embeds one batch while it stores the previous. A batch that repeats an id of a batch
        still in flight waits for it: the later line of a file always wins. ``on_batch`` hears how
        many documents each batch had once it is answered; ``on_written``, which of them the service
        took (written, or already stored unchanged): a record kept from it survives an interruption."""
        summary = summary or IngestSummary()
        started = time.perf_counter()
        pending: dict[Future, set] = {}
        summary_lock = threading.Lock()

        def settle(done: Iterable[Future]) -> None:
            for future in done:
                future.result()  # a failed batch fails the ingest
                pending.pop(future)

        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            for batch in batched(documents, batch_size):
                ids = {hashable(document.body.get("id")) for document in batch}
                settle([future for future, in_use in pending.items() if in_use & ids])
                if len(pending) >= in_flight:
                    settle(wait(pending, return_when=FIRST_COMPLETED).done)
                future = pool.submit(self._send_batch, collection, batch, summary, summary_lock, on_written)
                if on_batch:
                    future.add_done_callback(lambda _, n=len(batch): on_batch(n))
                pending[future] = ids
            settle(list(pending))
        summary.seconds = time.perf_counter() - started
        return summary

    def _send_batch(self, collection: str, batch: list[SourceDocument], summary: IngestSummary,
                    summary_lock: threading.Lock, on_written: Callable[[list[SourceDocument]], None] | None) -> None:
        while batch:
            try:
                result = self.upsert(collection, [document.body for document in batch])
            except ServiceError as error:
                problems = error.document_problems
                if problems is None:
                    raise
                with summary_lock:
                    for index in sorted(problems):
                        summary.rejected.append(Rejected(batch[index].where, problems[index]))
                batch = [document for index, document in enumerate(batch) if index not in problems]
                continue
            with summary_lock:
                summary.upserted += result["upserted"]
                summary.unchanged += result["unchanged"]
            if on_written:
                on_written(batch)
            return

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
