"""200 concurrent mixed requests: every one answered, with its own vectors, in its own order."""

import asyncio
import base64
import random

import httpx
import numpy as np

from tests.conftest import cosines


def decode(item, encoding_format):
    if encoding_format == "base64":
        return np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    return np.array(item["embedding"], dtype=np.float32)


def test_two_hundred_concurrent_mixed_requests(service_url, reference_minilm):
    rng = random.Random(7)
    pool = [f"sentence {i}: " + " ".join(rng.choice(["ray", "milvus", "vector", "debian", "search", "batch"])
                                         for _ in range(rng.randint(1, 40))) for i in range(300)]
    reference = dict(zip(pool, reference_minilm.encode(pool, batch_size=64)))
    requests = []
    for _ in range(200):
        texts = rng.sample(pool, rng.choice([1, 1, 1, 2, 4, 8, 16]))
        body = {"model": "minilm", "input": texts if len(texts) > 1 or rng.random() < 0.5 else texts[0],
                "encoding_format": rng.choice(["float", "base64"])}
        if rng.random() < 0.25:
            body["dimensions"] = rng.choice([32, 128, 384])
        requests.append((texts, body))

    async def send_all():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"{service_url}/v1/embeddings", json=body) for _, body in requests)
            )

    responses = asyncio.run(send_all())
    for (texts, body), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [item["index"] for item in data] == list(range(len(texts)))
        got = np.array([decode(item, body["encoding_format"]) for item in data])
        expected = np.array([reference[text] for text in texts])
        if "dimensions" in body:
            expected = expected[:, : body["dimensions"]]
        assert got.shape == expected.shape
        assert cosines(got, expected).min() >= 0.9999
