"""LangChain's and LlamaIndex's OpenAI embedding classes against the running service, as their users create them.

LangChain's ``OpenAIEmbeddings`` tokenises with tiktoken by default and sends OpenAI's cl100k token ids. tiktoken
downloads its encodings, which cannot happen here: its cache is filled with the cl100k file that the ``bpe-openai``
package ships (the same bytes, checked by tiktoken against the hash it expects), so tiktoken runs unchanged.
Every request is recorded on its way out by an httpx event hook of the client the class is given.
"""

import gzip
import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import cosines

TEXTS = ["hello world", "the window manager for the desktop"]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
def offline_tiktoken(tmp_path, monkeypatch):
    import bpe_openai.data

    cache = tmp_path / "tiktoken"
    cache.mkdir()
    shipped = Path(bpe_openai.data.__file__).parent / "cl100k_base.tiktoken.gz"
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(gzip.decompress(shipped.read_bytes()))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


@pytest.fixture
def sent() -> list[dict]:
    return []


@pytest.fixture
def recording_client(sent):
    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    with httpx.Client(event_hooks={"request": [record]}, timeout=60) as client:
        yield client


def langchain_embeddings(service_url, http_client, **settings):
    from langchain_openai import OpenAIEmbeddings

    return OpenAIEmbeddings(model="minilm", base_url=f"{service_url}/v1", api_key="unused", max_retries=0,
                            http_client=http_client, **settings)


def test_langchains_default_request_is_a_400_that_says_what_to_set(service_url, offline_tiktoken, recording_client,
                                                                  sent, reference_minilm):
    import bpe_openai

    embeddings = langchain_embeddings(service_url, recording_client)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        embeddings.embed_documents(TEXTS)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        embeddings.embed_query(TEXTS[0])
    cl100k = bpe_openai.get_encoding("cl100k_base")
    assert sent[0]["input"] == [cl100k.encode(text) for text in TEXTS] == [[15339, 1917], [1820, 3321, 6783, 369,
                                                                                          279, 17963]]
    assert sent[1]["input"] == [[15339, 1917]]
    # the same request read as MiniLM's own ids (what it got before) answers other words' vectors
    as_own = httpx.post(f"{service_url}/v1/embeddings", json={**sent[0], "encoding_format": "float",
                                                               "tokenizer": "model"}, timeout=60)
    assert as_own.status_code == 200, as_own.text
    vectors = [item["embedding"] for item in as_own.json()["data"]]
    assert cosines(vectors, reference_minilm.encode(TEXTS)).max() < 0.5


def test_langchain_sending_text_gets_the_texts_vectors(service_url, recording_client, sent, reference_minilm):
    embeddings = langchain_embeddings(service_url, recording_client, check_embedding_ctx_length=False)
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query(TEXTS[1])
    assert [body["input"] for body in sent] == [TEXTS, [TEXTS[1]]]
    assert cosines(documents + [query], reference_minilm.encode(TEXTS + TEXTS[1:])).min() >= 0.9999


def test_llama_index_sends_text_and_gets_the_texts_vectors(service_url, recording_client, sent, reference_minilm):
    from llama_index.embeddings.openai import OpenAIEmbedding

    embedding = OpenAIEmbedding(model_name="minilm", api_base=f"{service_url}/v1", api_key="unused", max_retries=0,
                                http_client=recording_client)
    vectors = embedding.get_text_embedding_batch(TEXTS) + [embedding.get_query_embedding(TEXTS[0])]
    assert [body["input"] for body in sent] == [TEXTS, [TEXTS[0]]]
    assert cosines(np.array(vectors), reference_minilm.encode(TEXTS + TEXTS[:1])).min() >= 0.9999
