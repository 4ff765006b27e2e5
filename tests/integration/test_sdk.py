"""The typed SDK against the running service. Every route's answer is the typed object whose dump is the JSON the
service sent, read from the very response (httpx's own event hook) and, for reads, from the same request sent
through plain httpx; errors come back as the typed errors; a 429 is retried after its ``Retry-After``.
The sync and async clients run the same table of calls."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from rayprism import (
    AsyncClient,
    Client,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    ServiceError,
    UnprocessableError,
)
from rayprism.platform.api import responses
from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_collections import DOCUMENTS, QUERIES
from tests.integration.test_errors import queued_inputs
from tests.integration.test_reembed import QUERIES as REEMBED_QUERIES

PAGE = ("# Installing\n\nRun the installer, then pick the packages you want. " * 6
        + "\n\n# Removing\n\nThe package manager removes what you no longer need, and its configuration. " * 6)


@dataclass
class Step:
    """One SDK call: ``method(*args, **kwargs)`` answers ``shape``; ``plain`` is the same request through httpx
    (method, path, body) when it is a read whose answer must equal it."""

    method: str
    args: tuple
    kwargs: dict
    shape: Any
    plain: tuple | None = None
    ignore: frozenset = field(default_factory=frozenset)
    """Keys that may change between two reads (the in-memory mirror's state, built in the background)."""
    settle: str | None = None
    """A collection whose in-memory mirror is awaited first: until it is built Milvus answers searches, after it
    the mirror, and the two calls compared must be answered alike."""


def steps(prefix: str) -> list[Step]:
    """Every route, in an order that works: create, write, read, search, alias, delete, drop."""
    docs, pages, alias = f"{prefix}_docs", f"{prefix}_pages", f"{prefix}_alias"
    documents = DOCUMENTS[:30]
    doc_id = str(documents[3]["id"])
    query = QUERIES[0]["query"]
    mirror = frozenset({"mirror"})

    def read(method, path, body=None):
        return (method, path, body)

    def search(collection, text, **options):
        return Step("search", (collection, text), options, responses.SearchResults,
                    read("POST", f"/v1/collections/{collection}/search", {"query": text, **options}),
                    settle=collection)

    embed_body = {"input": ["apt installs packages", "a window manager"], "model": "minilm", "dimensions": 16}
    rerank_body = {"query": query, "documents": [d["text"] for d in documents[:5]], "model": "judge", "top_n": 3,
                   "return_documents": True}
    return [
        Step("embeddings", (embed_body["input"],), {"model": "minilm", "dimensions": 16}, responses.EmbeddingResponse,
             read("POST", "/v1/embeddings", embed_body)),
        Step("embeddings", ("base64 please",), {"model": "minilm", "encoding_format": "base64"},
             responses.EmbeddingResponse,
             read("POST", "/v1/embeddings", {"input": "base64 please", "model": "minilm", "encoding_format": "base64"})),
        Step("rerank", (rerank_body["query"], rerank_body["documents"]),
             {"model": "judge", "top_n": 3, "return_documents": True}, responses.RerankResponse,
             read("POST", "/v1/rerank", rerank_body)),
        Step("models", (), {}, responses.ModelList, read("GET", "/v1/models")),
        Step("model", ("minilm",), {}, responses.ModelDescription, read("GET", "/v1/models/minilm")),
        Step("health", (), {}, responses.Health, read("GET", "/health"), frozenset({"replica"})),
        Step("create_collection", (docs,), {"model": "minilm", "fields": SAMPLE_FIELDS},
             responses.CollectionDescription),
        Step("create_collection", (pages,), {"model": "minilm", "chunking": {"max_tokens": 32, "overlap_tokens": 4}},
             responses.CollectionDescription),
        Step("upsert", (docs, documents), {}, responses.DocumentsUpserted),
        Step("upsert", (pages, [{"id": "guide/install.md", "text": PAGE}]), {}, responses.DocumentsUpserted),
        Step("collection", (docs,), {}, responses.CollectionDescription, read("GET", f"/v1/collections/{docs}"),
             mirror),
        Step("collections", (), {}, responses.CollectionList, read("GET", "/v1/collections"), mirror),
        Step("document", (docs, doc_id), {}, responses.Document, read("GET", f"/v1/collections/{docs}/documents/{doc_id}")),
        Step("document", (pages, "guide/install.md"), {}, responses.Document,
             read("GET", f"/v1/collections/{pages}/documents/guide/install.md")),
        Step("document", (pages, "guide/install.md"), {"pieces": True}, responses.Document,
             read("GET", f"/v1/collections/{pages}/documents/guide/install.md?pieces=true")),
        search(docs, query, k=5),
        search(docs, query, k=5, mode="dense", filter='section == "utils"', output_fields=["package"]),
        search(docs, query, k=5, mode="sparse"),
        search(docs, query, k=4, fusion={"type": "rrf", "k": 30}, candidates=20),
        search(docs, query, k=4, fusion={"type": "weighted", "weights": {"dense": 0.8, "sparse": 0.2}}),
        search(docs, query, k=3, rerank={"model": "judge", "candidates": 8, "weight": 0.5}),
        search(pages, "how do I remove a package", k=1, passages=2),
        Step("point_alias", (alias, docs), {}, responses.Alias),
        Step("list_aliases", (), {}, responses.AliasList, read("GET", "/v1/aliases")),
        Step("aliases", (), {}, dict[str, str]),
        search(alias, query, k=3, mode="dense"),
        Step("drop_alias", (alias,), {}, responses.AliasDeleted),
        Step("delete_documents", (docs, [doc_id, "never-there"]), {}, responses.DocumentsDeleted),
        Step("drop_collection", (pages,), {}, responses.CollectionDeleted),
        Step("drop_collection", (docs,), {}, responses.CollectionDeleted),
    ]


def dumped(shape: Any, answer: Any) -> Any:
    return TypeAdapter(shape).dump_python(answer, mode="json")


def without(body: Any, keys: frozenset) -> Any:
    """``body`` less ``keys``, at the top and in each item of a list's ``data``."""
    if not isinstance(body, dict):
        return body
    trimmed = {key: value for key, value in body.items() if key not in keys}
    if isinstance(trimmed.get("data"), list):
        trimmed["data"] = [without(item, keys) for item in trimmed["data"]]
    return trimmed


def settle(plain: httpx.Client, collection: str, timeout_s: float = 60) -> None:
    """Wait until the collection's mirror is built (a search starts the build), or Milvus is all there is."""
    deadline = time.monotonic() + timeout_s
    plain.post(f"/v1/collections/{collection}/search", json={"query": "warm up"})
    while plain.get(f"/v1/collections/{collection}").json().get("mirror") is None and time.monotonic() < deadline:
        time.sleep(0.2)


def call(client: Client, step: Step, plain: httpx.Client) -> Any:
    if step.settle:
        settle(plain, step.settle)
    return getattr(client, step.method)(*step.args, **step.kwargs)


def check(step: Step, answer: Any, raw: httpx.Response, plain: httpx.Client) -> None:
    if step.method == "aliases":  # a helper over GET /v1/aliases: alias → collection
        assert answer == {item["name"]: item["collection"] for item in raw.json()["data"]}
        return
    assert dumped(step.shape, answer) == raw.json(), step.method
    if step.plain is not None:
        method, path, body = step.plain
        again = plain.request(method, path, json=body)
        assert again.status_code == raw.status_code, again.text
        assert without(again.json(), step.ignore) == without(raw.json(), step.ignore), step.method


def test_every_route_through_the_client_is_the_typed_object_of_what_the_service_sent(service_url):
    seen: list[httpx.Response] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    with Client(service_url, timeout_s=120) as client, httpx.Client(base_url=service_url, timeout=120) as plain:
        client.http.event_hooks["response"].append(keep)
        for step in steps("sdk_sync"):
            check(step, call(client, step, plain), seen[-1], plain)
        assert "rayprism_requests_total" in client.metrics()
        assert plain.get("/v1/collections/sdk_sync_docs").status_code == 404


def test_every_route_through_the_async_client_alike(service_url):
    seen: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    async def run(plain: httpx.Client) -> None:
        async with AsyncClient(service_url, timeout_s=120) as client:
            client.http.event_hooks["response"].append(keep)
            for step in steps("sdk_async"):
                check(step, await call(client, step, plain), seen[-1], plain)
            assert "rayprism_requests_total" in await client.metrics()

    with httpx.Client(base_url=service_url, timeout=120) as plain:
        asyncio.run(run(plain))


def test_the_services_errors_come_back_typed(service_url):
    with Client(service_url, timeout_s=120) as client:
        with pytest.raises(NotFoundError) as missing:
            client.collection("sdk_no_such_collection")
        assert isinstance(missing.value, ServiceError) and missing.value.http_status == 404
        assert missing.value.detail["code"] == "not_found" and "sdk_no_such_collection" in missing.value.message

        with pytest.raises(InvalidInputError) as empty:  # the service's 400: an empty text
            client.embeddings(["fine", " "], model="minilm")
        assert empty.value.http_status == 400 and empty.value.param == "input[1]"

        with pytest.raises(InvalidInputError) as refused:  # a batch with a bad document: which one, and why
            client.upsert("debian", [{"id": "ok", "text": "fine"}, {"id": "bad", "text": "x", "installed_size": "big"}])
        assert refused.value.document_problems and set(refused.value.document_problems) == {1}

        client.create_collection("sdk_conflict", model="minilm", bm25=False)
        with pytest.raises(ConflictError) as conflict:  # the same name, another config
            client.create_collection("sdk_conflict", model="minilm", bm25=True)
        assert conflict.value.http_status == 409
        client.drop_collection("sdk_conflict")

        with pytest.raises(UnprocessableError) as typo:  # refused before sending, as the service would (422)
            client.search("debian", "apt", kk=3)
        assert typo.value.param == "kk" and "unknown field" in typo.value.message


def metric_value(url: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples with these labels (0 when none yet)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fill_tiny_queue(url: str) -> threading.Thread:
    """tiny-queue's idle batcher waits 2 s with room for 4 inputs: fill it, so the next request is refused (429,
    ``Retry-After: 1``) until that batch runs."""
    filler = threading.Thread(target=lambda: httpx.post(
        f"{url}/v1/embeddings", json={"model": "tiny-queue", "input": ["a", "b", "c", "d"]}, timeout=30))
    filler.start()
    deadline = time.monotonic() + 10
    while queued_inputs(url, "tiny-queue") < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    return filler


def test_a_429_is_retried_after_its_retry_after_and_a_429_past_the_retries_is_an_overloaded_error(
        service_url, caplog):
    """With no retries the full queue is an OverloadedError carrying ``Retry-After``; with three, each after the
    1 s the service asks for, the request gets through once the queued batch has run (it waits 2 s: retries
    sent at once would all be refused)."""
    with Client(service_url, max_retries=0) as impatient:
        filler = fill_tiny_queue(service_url)
        with pytest.raises(OverloadedError) as refused:
            impatient.embeddings("e", model="tiny-queue")
        filler.join()
    assert refused.value.http_status == 429 and refused.value.retry_after_s == 1

    refusals = metric_value(service_url, "rayprism_requests_total", endpoint="embeddings", status="429")
    caplog.set_level(logging.INFO, logger="rayprism.client")
    with Client(service_url, max_retries=3) as patient:
        filler = fill_tiny_queue(service_url)
        started = time.monotonic()
        answer = patient.embeddings("e", model="tiny-queue")
        waited_s = time.monotonic() - started
        filler.join()
    assert len(answer["data"]) == 1
    retries = [record.getMessage() for record in caplog.records if record.name == "rayprism.client"]
    assert retries and all("429 with Retry-After 1; retrying in 1.00 s" in message for message in retries), retries
    assert waited_s >= len(retries) * 1.0
    assert metric_value(service_url, "rayprism_requests_total", endpoint="embeddings", status="429") \
        == refusals + len(retries)  # the service itself refused each one the client retried


def test_the_async_client_retries_a_429_alike(service_url, caplog):
    caplog.set_level(logging.INFO, logger="rayprism.client")

    async def embed() -> dict:
        async with AsyncClient(service_url, max_retries=3) as client:
            return await client.embeddings("e", model="tiny-queue")

    filler = fill_tiny_queue(service_url)
    answer = asyncio.run(embed())
    filler.join()
    assert len(answer["data"]) == 1
    retries = [record.getMessage() for record in caplog.records if record.name == "rayprism.client"]
    assert retries and all("429 with Retry-After 1" in message for message in retries), retries


def test_reembed_and_rollback_through_the_client(service_url):
    """The job routes: start, follow, list, roll back; each answer the typed job of the body sent."""
    seen: list[httpx.Response] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    def finished(client: Client, job_id: str) -> responses.ReembedJob:
        deadline = time.monotonic() + 600
        while (job := client.reembed_job(job_id)).state == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        check(Step("reembed_job", (), {}, responses.ReembedJob, ("GET", f"/v1/reembed/{job_id}", None)), job,
              seen[-1], plain)
        return job

    documents = [{**document, "id": str(document["id"])} for document in DOCUMENTS]
    with Client(service_url, timeout_s=120) as client, httpx.Client(base_url=service_url, timeout=120) as plain:
        client.create_collection("sdk_re_v1", model="clip", fields=SAMPLE_FIELDS)
        client.upsert("sdk_re_v1", documents)
        client.point_alias("sdk_re", "sdk_re_v1")
        client.http.event_hooks["response"].append(keep)

        started = client.reembed("sdk_re", "minilm", batch_size=16, evaluation={"queries": REEMBED_QUERIES})
        check(Step("reembed", (), {}, responses.ReembedJob), started, seen[-1], plain)
        assert started.model == "minilm" and started.source == "sdk_re_v1"
        assert finished(client, started.id).state == "done"
        assert client.collection("sdk_re")["model"] == "minilm"

        rolled = client.rollback("sdk_re")
        check(Step("rollback", (), {}, responses.ReembedJob), rolled, seen[-1], plain)
        assert finished(client, rolled.id).state == "done" and rolled.rolls_back == started.id
        jobs = client.reembed_jobs("sdk_re")
        check(Step("reembed_jobs", (), {}, responses.ReembedJobList, ("GET", "/v1/collections/sdk_re/reembed", None)),
              jobs, seen[-1], plain)
        assert [job.id for job in jobs.data] == [started.id, rolled.id]
        assert client.collection("sdk_re")["name"] == "sdk_re_v1"
