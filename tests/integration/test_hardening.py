"""A reliability and security campaign's reproductions, against the running service: each answered as the docs say."""

import re
import socket
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.integration.conftest import SERVING_REPLICA, actor_pids
from tests.integration.test_errors import assert_openai_error


def test_a_caller_cannot_choose_where_the_store_writes(service_url, tmp_path):
    for uri in [str(tmp_path / "made" / ".." / "evil.db"), "http://127.0.0.1:9"]:
        response = httpx.post(f"{service_url}/v1/collections", json={"name": "elsewhere", "uri": uri}, timeout=30)
        assert_openai_error(response, 400, "uri cannot be chosen over the API", "uri")
    assert not list(tmp_path.iterdir())
    assert httpx.get(f"{service_url}/v1/collections/elsewhere", timeout=30).status_code == 404


def test_error_bodies_and_listings_never_show_server_paths(service_url, store_dir):
    answers = [
        httpx.get(f"{service_url}/v1/collections/nowhere", timeout=30),
        httpx.post(f"{service_url}/v1/collections/nowhere/search", json={"query": "x"}, timeout=30),
        httpx.post(f"{service_url}/v1/collections", json={"name": "debian", "bm25": False}, timeout=30),
        httpx.get(f"{service_url}/v1/collections", timeout=30),
        httpx.get(f"{service_url}/v1/collections/debian", timeout=30),
        httpx.get(f"{service_url}/health", timeout=30),
    ]
    assert [a.status_code for a in answers] == [404, 404, 409, 200, 200, 200]
    for answer in answers:
        assert str(store_dir) not in answer.text and ".db" not in answer.text, answer.text


@pytest.mark.parametrize("expression, fragment", [
    ('(section == "x"', "unclosed '('"),
    ('section == "x")', "unbalanced ')'"),
    ("frobnicate(section)", "unknown function"),
    ("(" * 2000 + 'section == "x"' + ")" * 2000, "nested deeper than 64"),
    ("installed_size > 99999999999999999999999", "does not fit in 64 bits"),
    ('section >>> "x"', ""),
])
def test_filter_mistakes_are_400s_that_name_the_problem(service_url, store_dir, expression, fragment):
    response = httpx.post(f"{service_url}/v1/collections/debian/search",
                          json={"query": "editor", "filter": expression}, timeout=60)
    assert_openai_error(response, 400, fragment, "filter")
    assert str(store_dir) not in response.text


def test_names_and_index_parameters_are_checked_whole(service_url):
    for body, param in [({"name": "ok\n"}, "name"), ({"name": "ok", "fields": {"a\n": "int64"}}, None),
                        ({"name": "ok", "index": {"type": "HNSW", "params": {"M": -5}}}, "index"),
                        ({"name": "ok", "index": {"type": "FLAT", "params": {"nlist": 4}}}, "index")]:
        response = httpx.post(f"{service_url}/v1/collections", json=body, timeout=30)
        assert response.status_code == 422, (body, response.text)
        assert param is None or response.json()["error"]["param"] == param
    assert httpx.get(f"{service_url}/v1/collections/ok", timeout=30).status_code == 404


def test_a_body_longer_than_its_content_length_gets_a_json_400(service_url):
    host, port = service_url.removeprefix("http://").split(":")
    body = b'{"input": "hello there, this body is longer than declared"}'
    request = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 10\r\n\r\n" + body)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    responses = received.split(b"HTTP/1.1 ")[1:]
    assert responses, received
    last = responses[-1]
    assert last.startswith(b"400") and b"application/json" in last and b'"error"' in last, received


class PageLinks(HTMLParser):
    """Every ``href`` and ``src`` of a page, as a browser would read them."""

    def __init__(self, html: str):
        super().__init__()
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def test_docs_link_their_files_relatively_whatever_host_the_caller_names(service_url):
    """Behind a proxy, a TLS terminator or a port-forward the Host header names an address the server cannot
    know is right (and any caller can set it): /docs must not build its links from it."""
    odd_host = "attacker.example:6666"
    page = httpx.get(f"{service_url}/docs", headers={"Host": odd_host}, timeout=30)
    assert page.status_code == 200 and "swagger-ui" in page.text
    links = PageLinks(page.text).links + re.findall(r"url: '([^']*)'", page.text)  # the spec, in the page's script
    assert len(links) == 4, links  # the stylesheet, the icon, the script, /openapi.json
    assert "attacker.example" not in page.text and "http://" not in page.text and "https://" not in page.text
    for link in links:
        assert link.startswith("/") and not link.startswith("//"), link
        asset = httpx.get(urljoin(str(page.url), link), headers={"Host": odd_host}, timeout=30)
        assert asset.status_code == 200 and asset.content, link
    root = httpx.get(f"{service_url}/", headers={"Host": odd_host}, timeout=30)
    assert root.status_code == 307 and root.headers["location"] == "/docs"
    assert httpx.get(f"{service_url}/swagger/__init__.py", timeout=30).status_code == 404  # the listed files only


def metric(service_url: str, name: str, **labels) -> float:
    """The sum of ``name``'s series that carry ``labels``."""
    total = 0.0
    for line in httpx.get(f"{service_url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_that_leaves_is_counted_apart_and_its_work_dropped(service_url):
    """tiny-queue's idle batcher waits 2 s for company: the caller gives up after 0.5 s, before anything runs."""
    gone_before = metric(service_url, "rayprism_requests_total", model="tiny-queue", status="499")
    embedded_before = metric(service_url, "rayprism_inputs_total", model="tiny-queue")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service_url}/v1/embeddings", json={"model": "tiny-queue", "input": ["a", "b"]},
                   timeout=httpx.Timeout(30, read=0.5))
    time.sleep(3)  # past the batcher's wait: the dropped request would have run by now
    assert metric(service_url, "rayprism_requests_total", model="tiny-queue", status="499") == gone_before + 1
    assert metric(service_url, "rayprism_requests_total", model="tiny-queue", status="500") == 0
    assert metric(service_url, "rayprism_inputs_total", model="tiny-queue") == embedded_before


def timed(call) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = call()
    return time.perf_counter() - started, response


def test_one_huge_request_does_not_stall_everyone(service_url):
    """2048 inputs in 8 MB, and an 8 MB single string: /health answers in 1 s and a one-sentence request within
    a batch's time;
    when the huge request's client gives up, its remaining work is dropped."""
    huge = {"model": "minilm", "input": ["words of a long document " * 160] * 2048}  # 8.2 MB, 2048 × 256 tokens
    done = threading.Event()
    ran_before = metric(service_url, "rayprism_batch_size_sum", model="minilm")

    def send_and_give_up():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{service_url}/v1/embeddings", json=huge, timeout=httpx.Timeout(60, read=8))
        done.set()

    sender = threading.Thread(target=send_and_give_up)
    sender.start()
    time.sleep(3)  # parsed, tokenised and running by now
    assert not done.is_set()
    health_s, health = timed(lambda: httpx.get(f"{service_url}/health", timeout=30))
    one_s, one = timed(lambda: httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": "hi"},
                                          timeout=30))
    assert health.status_code == one.status_code == 200
    # /health never waits; the sentence waits for the batch running (≤ 8192 tokens: ~1 s on an idle 2-core
    # machine, up to 2-3 s on a busy CI box), not for the huge request's minutes
    assert health_s < 1 and one_s < 3, (health_s, one_s)
    sender.join()
    deadline = time.monotonic() + 30  # the batch running when the client left finishes; nothing after it
    while (queued := metric(service_url, "rayprism_queue_depth", model="minilm")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert queued == 0  # the abandoned inputs are gone
    ran = metric(service_url, "rayprism_batch_size_sum", model="minilm") - ran_before
    assert ran < 2048, ran  # dropped, not run
    single = {"model": "minilm", "input": "word " * 1_600_000}  # one 8 MB string: cut, not tokenised whole
    single_s, answer = timed(lambda: httpx.post(f"{service_url}/v1/embeddings", json=single, timeout=60))
    assert answer.status_code == 200 and answer.json()["usage"]["total_tokens"] == 256
    assert single_s < 5, single_s


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_comes_back_after_huge_strings(service_url):
    (pid,) = actor_pids(SERVING_REPLICA)
    body = {"model": "minilm", "input": ["x" * 2_000_000, "y " * 1_000_000, "z" * 2_000_000]}
    httpx.post(f"{service_url}/v1/embeddings", json=body, timeout=120)
    before = resident_mib(pid)
    for _ in range(6):
        assert httpx.post(f"{service_url}/v1/embeddings", json=body, timeout=120).status_code == 200
    grown = resident_mib(pid) - before
    assert grown < 100, f"the replica grew {grown:.0f} MiB over six 6 MB requests"
