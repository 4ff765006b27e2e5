"""Every caller mistake gets the OpenAI error shape with a useful message, never a stack trace."""

import threading
import time

import httpx
import pytest


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
        ({"model": "minilm", "input": [[101, 99999999]]}, 400, "token id 99999999", "input[0]"),
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
