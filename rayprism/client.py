"""A small client for the service's HTTP API, used by ``rayprism ingest|search``, start-up seeding and users.

Ingest streams documents in batches, backs off when the service says so
(429/503 with ``Retry-After``), and when a batch is rejected for bad documents it
reports those (with their line numbers) and sends the rest again: one bad row
never costs its neighbours.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rayprism.platform.constants import API_KEY_VARIABLE
from rayprism.platform.errors import RayprismError

DEFAULT_URL = "http://127.0.0.1:8000"
RETRIABLE = (429, 502, 503)
CONNECT_ATTEMPTS = 3


class ServiceError(RayprismError):
    """The service answered with an error; ``message`` is its own."""

    def __init__(self, response: httpx.Response):
        try:
            error = response.json()["error"]
            message = error["message"]
        except (ValueError, KeyError, TypeError):
            error, message = {}, response.text[:500] or response.reason_phrase
        super().__init__(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")
        self.http_status = response.status_code
        self.document_problems: dict[int, str] | None = None
        """For a batch refused because of some of its documents: index → reason."""
        if error.get("code") == "invalid_documents":
            self.document_problems = {}
            for problem in error.get("errors", []):
                where = f"{problem['field']}: " if problem.get("field") else ""
                self.document_problems.setdefault(problem["index"], where + problem["message"])


@dataclass
class Rejected:
    where: str
    reason: str


@dataclass
class IngestSummary:
    upserted: int = 0
    unchanged: int = 0
    """Documents the service already held with the same content (not embedded again)."""
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return (self.upserted + self.unchanged) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class SourceDocument:
    where: str
    """Where it came from, for error reports: ``file.jsonl:17``."""
    body: dict


def read_jsonl(path: Path, summary: IngestSummary) -> Iterator[SourceDocument]:
    """Documents of a JSONL file; lines that are not JSON objects are recorded as rejected."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                body = json.loads(line)
            except json.JSONDecodeError as error:
                summary.rejected.append(Rejected(where, f"not JSON: {error.msg}"))
                continue
            if not isinstance(body, dict):
                summary.rejected.append(Rejected(where, "not a JSON object"))
                continue
            yield SourceDocument(where, body)


@dataclass
class FieldMapping:
    """How a source's records become a collection's documents: which keys hold the id and the
    text, and whether keys the collection lacks are dropped (and remembered) or sent."""

    id_field: str = "id"
    text_field: str | None = None
    """Default: the collection's own text field."""
    keep_unknown: bool = False
    dropped: set[str] = field(default_factory=set)
    """Keys left out because the collection has no such field."""

    def apply(self, schema: dict, documents: Iterable[SourceDocument]) -> Iterator[SourceDocument]:
        """``documents`` reshaped for the collection ``schema`` (as ``GET /v1/collections/{name}`` returns it)."""
        target_text = schema["text_field"]
        known = {"id", target_text, *schema["fields"]}
        for document in documents:
            body = dict(document.body)
            if self.id_field != "id":
                body["id"] = body.pop(self.id_field, None)
            if self.text_field and self.text_field != target_text:
                body[target_text] = body.pop(self.text_field, None)
            if not self.keep_unknown:
                self.dropped.update(body.keys() - known)
                body = {key: value for key, value in body.items() if key in known}
            yield SourceDocument(document.where, body)


def _batched(documents: Iterable[SourceDocument], size: int) -> Iterator[list[SourceDocument]]:
    iterator = iter(documents)
    while batch := list(islice(iterator, size)):
        yield batch


def _hashable(value) -> object:
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value, sort_keys=True)


class Client:
    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout_s: float = 300,
                 max_retries: int = 8):
        """``api_key``: sent as ``Authorization: Bearer``; default ``$RAYPRISM_API_KEY``."""
        api_key = api_key or os.environ.get(API_KEY_VARIABLE)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers)
        self._max_retries = max_retries
        self._summary_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return str(self._http.base_url).rstrip("/")

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in range(self._max_retries + 1):
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as error:
                if attempt + 1 >= CONNECT_ATTEMPTS:
                    raise RayprismError(f"cannot reach {self._http.base_url}: {error}") from None
                time.sleep(0.5 * 2**attempt)
                continue
            if response.status_code in RETRIABLE and attempt < self._max_retries:
                time.sleep(float(response.headers.get("retry-after", min(2**attempt, 10))))
                continue
            if response.status_code >= 400:
                raise ServiceError(response)
            return response.json()
        raise AssertionError("unreachable")

    def collection(self, name: str) -> dict:
        return self.request("GET", f"/v1/collections/{name}")

    def aliases(self) -> dict[str, str]:
        """Alias → the collection it reaches."""
        return {alias["name"]: alias["collection"] for alias in self.request("GET", "/v1/aliases")["data"]}

    def point_alias(self, name: str, collection: str) -> dict:
        """Create ``name`` pointing at ``collection``, or repoint it there in one step."""
        return self.request("POST", "/v1/aliases", {"name": name, "collection": collection})

    def drop_alias(self, name: str) -> dict:
        return self.request("DELETE", f"/v1/aliases/{name}")

    def reembed(self, alias: str, model: str, *, evaluation: dict | None = None, batch_size: int | None = None) -> dict:
        """Start (or resume) re-embedding ``alias``'s collection with ``model``; answers the job."""
        body: dict = {"model": model}
        if evaluation:
            body["evaluation"] = evaluation
        if batch_size is not None:
            body["batch_size"] = batch_size
        return self.request("POST", f"/v1/collections/{alias}/reembed", body)

    def reembed_job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/reembed/{job_id}")

    def rollback(self, alias: str, *, batch_size: int | None = None) -> dict:
        """Start pointing ``alias`` back at the collection its last re-embedding moved it from."""
        body = {"batch_size": batch_size} if batch_size is not None else {}
        return self.request("POST", f"/v1/collections/{alias}/rollback", body)

    def rerank(self, query: str, documents: list[str], *, model: str | None = None, **options) -> dict:
        """``POST /v1/rerank``: the documents scored against ``query`` by a reranker, best first."""
        return self.request("POST", "/v1/rerank", {"query": query, "documents": documents, "model": model, **options})

    def requests_by_replica(self, endpoint: str, *, scrapes: int = 20) -> dict[str, float]:
        """Each serving replica's own count of ``endpoint`` requests answered, by replica id. One scrape of
        ``/metrics`` reaches one replica (behind HAProxy or Serve's proxy), so this scrapes up to
        ``scrapes`` times to hear from every replica."""
        counts: dict[str, float] = {}
        for _ in range(scrapes):
            response = self._http.get("/metrics")
            if response.status_code >= 400:
                raise ServiceError(response)
            families = {family.name: family for family in text_string_to_metric_families(response.text)}
            replica = families["rayprism_replica_info"].samples[0].labels["replica"]
            counts[replica] = sum(sample.value for sample in families["rayprism_requests"].samples
                                  if sample.name == "rayprism_requests_total" and sample.labels["endpoint"] == endpoint)
        return counts

    def search(self, collection: str, query: str, **options) -> dict:
        body = {"query": query, **{key: value for key, value in options.items() if value is not None}}
        return self.request("POST", f"/v1/collections/{collection}/search", body)

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

        def settle(done: Iterable[Future]) -> None:
            for future in done:
                future.result()  # a failed batch fails the ingest
                pending.pop(future)

        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            for batch in _batched(documents, batch_size):
                ids = {_hashable(document.body.get("id")) for document in batch}
                settle([future for future, in_use in pending.items() if in_use & ids])
                if len(pending) >= in_flight:
                    settle(wait(pending, return_when=FIRST_COMPLETED).done)
                future = pool.submit(self._send, collection, batch, summary, on_written)
                if on_batch:
                    future.add_done_callback(lambda _, n=len(batch): on_batch(n))
                pending[future] = ids
            settle(list(pending))
        summary.seconds = time.perf_counter() - started
        return summary

    def _send(self, collection: str, batch: list[SourceDocument], summary: IngestSummary,
              on_written: Callable[[list[SourceDocument]], None] | None) -> None:
        while batch:
            try:
                result = self.request(
                    "POST", f"/v1/collections/{collection}/documents", {"documents": [d.body for d in batch]}
                )
            except ServiceError as error:
                problems = error.document_problems
                if problems is None:
                    raise
                with self._summary_lock:
                    for index in sorted(problems):
                        summary.rejected.append(Rejected(batch[index].where, problems[index]))
                batch = [document for index, document in enumerate(batch) if index not in problems]
                continue
            with self._summary_lock:
                summary.upserted += result["upserted"]
                summary.unchanged += result.get("unchanged", 0)
            if on_written:
                on_written(batch)
            return

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

