"""Bad days for a running service, through HTTP: a store path holding something else, a disk that fills up,
a client that hangs up in the middle of an upsert."""

import base64
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from rayprism import Client, NotFoundError, StoreFullError
from tests.integration.conftest import free_port
from tests.integration.test_serve_lifecycle import Service
from tests.small_disk import small_disk

DIMENSIONS = 16  # the tiny model's


def vector(rng: np.random.Generator) -> str:
    return base64.b64encode(rng.standard_normal(DIMENSIONS).astype("<f4").tobytes()).decode()


def documents(prefix: str, count: int, text_bytes: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"{prefix}-{i}", "text": f"{prefix} document {i} " + "x" * text_bytes, "vector": vector(rng)}
            for i in range(count)]


@pytest.mark.slow  # starts Ray
def test_a_store_path_holding_another_programs_file_is_refused_in_a_sentence(tmp_path, tiny_model_path):
    foreign = tmp_path / "store.db"
    foreign.write_bytes(os.urandom(4096))  # a Milvus Lite 2 file, or any other program's
    config = tmp_path / "serve.yaml"
    config.write_text(f"models:\n  - name: tiny\n    source: {tiny_model_path}\nstore: {{uri: {foreign}}}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    result = subprocess.run([sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(free_port())],
                            capture_output=True, text=True, env=env, timeout=300)
    printed = result.stdout + result.stderr
    assert result.returncode != 0, printed
    assert "is a file, not a Milvus Lite store" in result.stderr, printed
    assert "Traceback" not in printed and "File \"" not in printed, printed
    assert foreign.stat().st_size == 4096  # left as it was


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_model_path):
    """A service whose collection ``tight`` lives on a 16 MB disk, refusing writes below 4 MB free."""
    home = tmp_path_factory.mktemp("bad-days")
    with small_disk(16) as disk:
        config = home / "serve.yaml"
        config.write_text(
            f"server: {{port: {free_port()}}}\n"
            f"models:\n  - name: tiny\n    source: {tiny_model_path}\n"
            f"store: {{uri: {home / 'store.db'}, min_free_mb: 4, flush_after_s: 0.2}}\n"
            f"collections:\n  - {{name: tight, model: tiny, bm25: false, uri: {disk / 'tight.db'}}}\n"
        )
        running = Service(config)
        running.start()
        try:
            yield running.url
        finally:
            running.ctrl_c()


@pytest.mark.slow  # starts Ray
def test_a_disk_filling_up_answers_507_and_keeps_every_acknowledged_document(service):
    acknowledged: list[str] = []
    with Client(service, timeout_s=120) as client:
        for number in range(200):
            batch = documents(f"b{number}", 100, 2000, seed=number)
            try:
                client.upsert("tight", batch)
            except StoreFullError as refusal:
                assert refusal.http_status == 507 and refusal.detail["code"] == "store_full"
                assert "disk is full" in refusal.detail["message"]
                assert "tight.db" not in refusal.detail["message"]  # callers never see where the store lives
                break
            acknowledged += [document["id"] for document in batch]
        else:
            pytest.fail("the disk never filled")
        assert acknowledged
        assert client.collection("tight")["count"] == len(acknowledged)
        for document_id in acknowledged[::97] + acknowledged[-1:]:
            assert client.document("tight", document_id)["id"] == document_id
        assert client.search("tight", "b0 document 1", k=3)["results"]  # reads go on


def hang_up_after(url: str, path: str, body: bytes, delay_s: float) -> None:
    """Send a whole request, wait ``delay_s``, and close the connection without reading the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        connection.sendall(head + body)
        time.sleep(delay_s)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST


@pytest.mark.slow  # starts Ray
def test_a_client_that_hangs_up_mid_upsert_leaves_all_or_none_of_its_documents(service):
    httpx.post(f"{service}/v1/collections", json={"name": "hangups", "model": "tiny", "bm25": False},
               timeout=60).raise_for_status()
    batches = {}
    for number, delay_s in enumerate([0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0]):
        batch = documents(f"h{number}", 900, 8000, seed=number)  # ~7 MB: several store calls
        batches[number] = [document["id"] for document in batch]
        hang_up_after(service, "/v1/collections/hangups/documents", orjson.dumps({"documents": batch}), delay_s)
    time.sleep(15)  # whatever was started finishes
    with Client(service, timeout_s=120) as client:
        def stored(document_id: str) -> bool:
            try:
                return client.document("hangups", document_id)["id"] == document_id
            except NotFoundError:
                return False

        for number, ids in batches.items():
            present = [document_id for document_id in (ids[0], ids[len(ids) // 2], ids[-1]) if stored(document_id)]
            assert len(present) in (0, 3), f"batch {number}: only {present} of its documents were written"
