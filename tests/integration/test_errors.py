"""Every caller mistake gets the OpenAI error shape with a useful message, never a stack trace."""

import asyncio
import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import STORE_REPLICA


def assert_openai_error(response: httpx.Response, status: int, fragment: str, param=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert fragment in body["error"]["message"], body
    if param is not None:
        assert body["error"]["param"] == param
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize(
    "payload, status, fragment, param",
    [
        ({"model": "minilm", "input": ""}, 400, "input[0] is empty", "input[0]"),
        ({"model": "minilm", "input": ["ok", "  "]}, 400, "input[1] is empty", "input[1]"),
        ({"model": "minilm", "input": []}, 422, "input: must not be empty", "input"),
        ({"model": "minilm", "input": 42}, 422, "input: must be a string", "input"),
        ({"model": "minilm", "input": ["a", {"text": "b"}]}, 422, "input: must be", "input"),
        ({"model": "minilm", "input": [[101, 99999999]], "tokenizer": "model"}, 400, "token id 99999999", "input[0]"),
        ({"model": "minilm", "input": [[101, 7592, 102]]}, 400, "check_embedding_ctx_length=False", "input"),
        ({"model": "minilm", "input": "a", "tokenizer": "cl100k_base"}, 422, "tokenizer", "tokenizer"),
        ({"model": "minilm", "input": "a", "output_dtype": "binary", "encoding_format": "base64"}, 400,
         '"encoding_format": "float"', "encoding_format"),
        ({"model": "minilm"}, 422, "input: field required", "input"),
        ({"model": "minilm", "input": "a", "encoding_format": "int4"}, 422, "encoding_format", "encoding_format"),
        ({"model": "minilm", "input": "a", "dimensions": 385}, 400, "exceeds the model's 384", "dimensions"),
        ({"model": "minilm", "input": "a", "modality": "image"}, 400, "embeds text, not image", "modality"),
        ({"model": "gpt-9", "input": "a"}, 404, "model 'gpt-9' does not exist", "model"),
        ({"input": "a"}, 400, "model is required", "model"),
        ({"model": "minilm", "input": ["x"] * 2049}, 413, "too many inputs: 2049", "input"),
    ],
)
def test_bad_requests(service_url, payload, status, fragment, param):
    response = httpx.post(f"{service_url}/v1/embeddings", json=payload)
    assert_openai_error(response, status, fragment, param)


def test_malformed_json_is_400(service_url):
    response = httpx.post(f"{service_url}/v1/embeddings", content=b'{"input": ["a",', headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "not valid JSON")


LIMIT = 8 * 1024 * 1024


def test_body_over_the_limit_is_413(service_url):
    big = {"model": "minilm", "input": ["y" * 10_000] * 900}  # ~9 MB against the 8 MiB limit
    assert_openai_error(httpx.post(f"{service_url}/v1/embeddings", json=big, timeout=60), 413, f"exceeds {LIMIT} bytes")


def test_chunked_body_over_the_limit_is_413(service_url):
    def chunks():
        yield b'{"input": ["'
        for _ in range(900):
            yield b"z" * 10_000
        yield b'"]}'

    response = httpx.post(f"{service_url}/v1/embeddings", content=chunks(), timeout=60)
    assert_openai_error(response, 413, f"exceeds {LIMIT} bytes")


def test_unknown_route_and_wrong_method(service_url):
    error = assert_openai_error(httpx.get(f"{service_url}/v1/nothing"), 404, "Not Found")
    assert error["code"] == "not_found"
    assert_openai_error(httpx.get(f"{service_url}/v1/embeddings"), 405, "Method Not Allowed")


def queued_inputs(service_url: str, model: str) -> float:
    for line in httpx.get(f"{service_url}/metrics").text.splitlines():
        if line.startswith(f'rayprism_queue_depth{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_full_queue_answers_429_with_retry_after(service_url):
    """tiny-queue's idle batcher waits 2 s and has room for 4 inputs: fill it, then knock."""
    first: dict = {}

    def fill_queue():
        first["response"] = httpx.post(
            f"{service_url}/v1/embeddings", json={"model": "tiny-queue", "input": ["a", "b", "c", "d"]}, timeout=30
        )

    filler = threading.Thread(target=fill_queue)
    filler.start()
    deadline = time.monotonic() + 10
    while queued_inputs(service_url, "tiny-queue") < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    refused = httpx.post(f"{service_url}/v1/embeddings", json={"model": "tiny-queue", "input": "e"})
    filler.join()
    error = assert_openai_error(refused, 429, "too many inputs queued")
    assert error["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
    assert first["response"].status_code == 200  # the queued work was not lost
    again = httpx.post(f"{service_url}/v1/embeddings", json={"model": "tiny-queue", "input": "e"}, timeout=30)
    assert again.status_code == 200


RECORD_START = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d{4}-\d\d-\d\d ", re.MULTILINE)
"""How each record of a Serve log begins; a traceback's lines follow its record's first line."""


def store_replica_log() -> list[str]:
    """The live store replica's Serve log, one record each, found through this session's own Ray: its replica
    id from the state API, its file in the session's log folder (Ray's log API needs the dashboard agent's fixed
    port, which another Ray on the machine may hold)."""
    import ray
    from ray.util.state import list_actors

    context = ray.get_runtime_context()
    (actor,) = list_actors(address=context.gcs_address, detail=True,
                           filters=[("class_name", "=", STORE_REPLICA), ("state", "=", "ALIVE")])
    replica_id = actor.name.rsplit("#", 1)[1]  # SERVE_REPLICA::<app>#<deployment>#<replica id>
    logs = Path(context.get_temp_dir(), context.get_session_name(), "logs", "serve")
    text = (logs / f"replica_rayprism_store_{replica_id}.log").read_text()
    starts = [match.start() for match in RECORD_START.finditer(text)]
    return [text[start:end] for start, end in zip(starts, starts[1:] + [len(text)])]


def store_fault(collection: str) -> None:
    """A fault of ours in the store, reached as only a broken caller inside the service could: the store trusts
    the serving replica to send rows with ids, and a row without one fails there as a bug would (a KeyError).
    Called from a Ray task, so that its handle (cached per process, bound to the event loop it first ran on)
    stays out of this process's Serve client."""
    import ray

    @ray.remote(num_cpus=0)
    def upsert_without_id() -> None:
        from ray import serve

        from rayprism.platform.constants import APP_NAME, STORE_DEPLOYMENT_NAME

        async def call():
            store = serve.get_deployment_handle(STORE_DEPLOYMENT_NAME, APP_NAME)
            await store.upsert.remote(collection, [{"text": "a row without an id"}])

        asyncio.run(call())

    with pytest.raises(KeyError):
        ray.get(upsert_without_id.remote(), timeout=120)


def test_a_callers_mistake_is_one_line_in_the_store_log_and_our_fault_keeps_its_traceback(service_url):
    """Serve logs what a replica method raises with its traceback: for a 404 or a 400 that buries our own faults.
    Serve holds a replica's INFO records back until its buffer fills or an ERROR comes (1000 records in its
    throughput-optimised mode), so the fault comes last and brings the lines before it to the file."""
    marker = uuid.uuid4().hex[:12]
    missing = f"nowhere_{marker}"
    response = httpx.post(f"{service_url}/v1/collections/{missing}/search", json={"query": "x"},
                          headers={"X-Request-ID": f"missing-{marker}"}, timeout=30)
    assert_openai_error(response, 404, f"{missing!r} does not exist")
    response = httpx.post(f"{service_url}/v1/collections/debian/search",
                          json={"query": "x", "filter": f"section >>> '{marker}'"},
                          headers={"X-Request-ID": f"filter-{marker}"}, timeout=30)
    assert_openai_error(response, 400, "filter: ", "filter")
    store_fault(f"faulty_{marker}")

    records = store_replica_log()
    told = []
    for request_id, answer in [(f"missing-{marker}", f"resolve: 404 collection {missing!r} does not exist"),
                               (f"filter-{marker}", "400 filter: ")]:
        about = [index for index, record in enumerate(records) if f" {request_id} " in record]
        assert about, f"nothing in the store's log for request {request_id}"
        assert not any("Traceback" in records[index] for index in about), [records[index] for index in about]
        assert all(records[index].count("\n") == 1 for index in about)  # one line each
        assert len([index for index in about if answer in records[index] and marker in records[index]]) == 1
        told += about
    fault = [index for index, record in enumerate(records) if "Traceback" in record and "KeyError: 'id'" in record]
    assert fault and fault[-1] > max(told) and records[fault[-1]].startswith("ERROR"), records[-5:]
