"""Aliases through the running service: every collection route takes an alias, and repointing one
while searches run fails none of them and never mixes two collections in one answer."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

DIMENSIONS = 384  # minilm's
PER_COLLECTION = 12


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def make_collection(url: str, name: str, prefix: str) -> None:
    """A collection of documents with their own vectors (nothing to embed), ids ``prefix0``…"""
    response = post(url, "/v1/collections", {"name": name, "model": "minilm"})
    assert response.status_code in (200, 201), response.text
    vectors = np.random.default_rng(len(prefix) + ord(prefix[0])).normal(size=(PER_COLLECTION, DIMENSIONS))
    documents = [{"id": f"{prefix}{i}", "text": f"document {i} of {name}", "vector": vector.tolist()}
                 for i, vector in enumerate(vectors)]
    assert post(url, f"/v1/collections/{name}/documents", {"documents": documents}).status_code == 200


@pytest.fixture(scope="module")
def two_collections(service_url) -> str:
    make_collection(service_url, "alias_left", "left")
    make_collection(service_url, "alias_right", "right")
    return service_url


def test_every_collection_route_takes_an_alias(two_collections):
    url = two_collections
    created = post(url, "/v1/aliases", {"name": "alias_live", "collection": "alias_left"})
    assert created.status_code == 201, created.text
    assert created.json() == {"object": "alias", "name": "alias_live", "collection": "alias_left", "previous": None}
    listed = httpx.get(f"{url}/v1/aliases").json()["data"]
    assert {"object": "alias", "name": "alias_live", "collection": "alias_left"} in listed

    described = httpx.get(f"{url}/v1/collections/alias_live").json()
    assert (described["name"], described["count"]) == ("alias_left", PER_COLLECTION)
    written = post(url, "/v1/collections/alias_live/documents",
                   {"documents": [{"id": "left-new", "text": "written through the alias"}]})
    assert written.status_code == 200 and written.json()["upserted"] == 1
    stored = httpx.get(f"{url}/v1/collections/alias_left/documents/left-new").json()
    assert stored["text"] == "written through the alias"
    hits = post(url, "/v1/collections/alias_live/search", {"query": "written through the alias", "k": 1})
    assert hits.status_code == 200 and hits.json()["results"][0]["id"] == "left-new"
    deleted = httpx.request("DELETE", f"{url}/v1/collections/alias_live/documents", json={"ids": ["left-new"]})
    assert deleted.json()["deleted"] == 1 and httpx.get(f"{url}/v1/collections/alias_left").json()["count"] == PER_COLLECTION

    repointed = post(url, "/v1/aliases", {"name": "alias_live", "collection": "alias_right"})
    assert repointed.status_code == 200 and repointed.json()["previous"] == "alias_left"
    assert httpx.get(f"{url}/v1/collections/alias_live").json()["name"] == "alias_right"

    refused = httpx.delete(f"{url}/v1/collections/alias_right")  # an alias still reaches it
    assert refused.status_code == 409 and "alias_live" in refused.json()["error"]["message"]
    assert post(url, "/v1/aliases", {"name": "alias_left", "collection": "alias_right"}).status_code == 409
    assert post(url, "/v1/collections", {"name": "alias_live", "model": "minilm"}).status_code == 409
    assert post(url, "/v1/aliases", {"name": "alias_other", "collection": "alias_live"}).status_code == 400
    assert post(url, "/v1/aliases", {"name": "alias_other", "collection": "missing"}).status_code == 404
    assert post(url, "/v1/aliases", {"name": "not a name", "collection": "alias_left"}).status_code == 422

    dropped = httpx.delete(f"{url}/v1/aliases/alias_live")
    assert dropped.json() == {"object": "alias.deleted", "name": "alias_live", "collection": "alias_right",
                              "deleted": True}
    assert httpx.delete(f"{url}/v1/aliases/alias_live").status_code == 404
    assert post(url, "/v1/collections/alias_live/search", {"query": "anything"}).status_code == 404
    assert httpx.get(f"{url}/v1/collections/alias_right").json()["count"] == PER_COLLECTION  # the collection stays


def test_repointing_under_searches_fails_none_and_mixes_no_collections(two_collections):
    url = two_collections
    assert post(url, "/v1/aliases", {"name": "alias_moving", "collection": "alias_left"}).status_code == 201
    answers: list[tuple[int, list[str]]] = []
    answered = threading.Condition()
    stop = threading.Event()

    def searcher() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                response = client.post("/v1/collections/alias_moving/search",
                                       json={"query": "document", "k": PER_COLLECTION, "mode": "dense"})
                ids = [hit["id"] for hit in response.json().get("results", [])] if response.status_code == 200 else []
                with answered:
                    answers.append((response.status_code, ids))
                    answered.notify_all()

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for turn in range(10):
            target = ("alias_right", "alias_left")[turn % 2]
            assert post(url, "/v1/aliases", {"name": "alias_moving", "collection": target}).status_code == 200
            with answered:  # a few searches between two repoints, some of them in flight across one
                seen = len(answers)
                assert answered.wait_for(lambda seen=seen: len(answers) >= seen + 2, timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert httpx.delete(f"{url}/v1/aliases/alias_moving").status_code == 200
    assert answers and all(status == 200 for status, _ in answers), {status for status, _ in answers}
    sources = set()
    for _, ids in answers:
        prefixes = {doc_id.rstrip("0123456789") for doc_id in ids}
        assert len(ids) == PER_COLLECTION and len(prefixes) == 1, ids  # wholly one collection's documents
        sources |= prefixes
    assert sources == {"left", "right"}
