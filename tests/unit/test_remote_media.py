"""Remote media URLs: fetched only from public addresses, whatever the name says."""

import asyncio
import http.server
import threading

import pytest

from rayprism.deployments.remote_media import RemoteMedia, is_url
from rayprism.platform.errors import InvalidInputError


@pytest.fixture()
def local_server():
    """An HTTP server on loopback that would happily answer: what an SSRF probe would reach."""
    handler = type("Handler", (http.server.BaseHTTPRequestHandler,), {
        "do_GET": lambda self: (self.send_response(200), self.end_headers(), self.wfile.write(b"secret")),
        "log_message": lambda self, *args: None,
    })
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0"])
def test_loopback_and_unspecified_addresses_are_refused(local_server, host):
    fetcher = RemoteMedia(max_bytes=1024)
    with pytest.raises(InvalidInputError, match="not a public address") as refused:
        asyncio.run(fetcher.resolve(["data:image/png;base64,AAAA", f"http://{host}:{local_server}/cat.png"]))
    assert refused.value.param == "input[1]"


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.7", "169.254.169.254", "224.0.0.1"])
def test_private_link_local_and_multicast_addresses_are_refused_before_any_connection(address):
    with pytest.raises(InvalidInputError, match="not a public address"):
        asyncio.run(RemoteMedia(max_bytes=1024, timeout_s=1).resolve([f"http://{address}/metadata"]))


def test_only_http_urls_are_urls():
    assert is_url("https://example.com/a.png") and is_url("HTTP://x/y")
    assert not is_url("data:image/png;base64,AAAA") and not is_url("file:///etc/passwd") and not is_url(b"http://x")
