"""Compact embeddings from the running service (``output_dtype``), through plain httpx and the official openai
client's ``extra_body``: codes equal sentence-transformers' ``quantize_embeddings`` of the service's own floats,
and stay within a bucket or a few bits of the reference model's."""

import httpx
import numpy as np
import openai
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from rayprism.platform.codecs.quantize import ranges_from_json

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Ray Serve scales Python model serving.",
         "Milvus is a vector database.", "the window manager for the desktop"]


def post(service_url, **body) -> np.ndarray:
    response = httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": TEXTS, **body}, timeout=60)
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


@pytest.fixture(scope="module")
def ranges(minilm_int8_ranges):
    return ranges_from_json(minilm_int8_ranges.read_bytes())


@pytest.mark.parametrize("dtype", ["binary", "ubinary", "int8", "uint8"])
def test_codes_equal_sentence_transformers_on_the_services_floats(service_url, reference_minilm, ranges, dtype):
    floats = post(service_url)
    codes = post(service_url, output_dtype=dtype)
    int8 = dtype.endswith("int8")
    assert codes.shape == (4, 384 if int8 else 48)  # 384 dimensions, or 8 to a value
    expected = quantize_embeddings(floats, precision=dtype, ranges=ranges if int8 else None)
    np.testing.assert_array_equal(codes, expected)
    reference = quantize_embeddings(reference_minilm.encode(TEXTS), precision=dtype, ranges=ranges if int8 else None)
    if int8:  # the service's floats differ from the reference's in the last bits: at most a bucket
        assert np.abs(codes.astype(int) - reference.astype(int)).max() <= 1
    else:
        flipped = np.unpackbits((codes.astype(np.int16) ^ reference.astype(np.int16)).astype(np.uint8), axis=1)
        assert flipped.sum(axis=1).max() <= 2


def test_dimensions_apply_first(service_url):
    truncated = post(service_url, dimensions=128)
    codes = post(service_url, dimensions=128, output_dtype="ubinary")
    assert codes.shape == (4, 16)
    np.testing.assert_array_equal(codes, quantize_embeddings(truncated, precision="ubinary"))


def test_the_openai_client_through_extra_body(service_url, ranges):
    client = openai.OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0)
    answer = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float",
                                      extra_body={"output_dtype": "int8"})
    np.testing.assert_array_equal([item.embedding for item in answer.data], post(service_url, output_dtype="int8"))
    # without a format the client asks for base64 and would read int8 bytes as float32: refused, not garbled
    with pytest.raises(openai.BadRequestError, match='send "encoding_format": "float"'):
        client.embeddings.create(model="minilm", input=TEXTS, extra_body={"output_dtype": "binary"})


def test_refusals(service_url):
    cases = [({"output_dtype": "int8", "dimensions": 64}, 400, "dimensions"),
             ({"output_dtype": "uint8", "model": "tiny-queue"}, 400, "output_dtype"),  # no ranges configured
             ({"output_dtype": "int4"}, 422, "output_dtype")]
    for extra, status, param in cases:
        response = httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": "x", **extra})
        assert response.status_code == status and response.json()["error"]["param"] == param, response.text


def test_openapi_documents_the_field_and_the_integer_answers(service_url):
    schema = httpx.get(f"{service_url}/openapi.json").json()["components"]["schemas"]
    field = schema["EmbeddingRequest"]["properties"]["output_dtype"]
    assert field["enum"] == ["float", "int8", "uint8", "binary", "ubinary"] and field["default"] == "float"
    assert "quantize_embeddings" in field["description"]
    answers = schema["Embedding"]["properties"]["embedding"]["anyOf"]
    assert {"type": "array", "items": {"type": "integer"}} in answers
