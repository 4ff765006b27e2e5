"""A real Milvus server for the tests: PyPI's ``milvus`` package, an embedded standalone Milvus 2.3.

Started in a directory of its own on ports the system hands out, so two test runs on one machine
never share a server, a port or data. It predates BM25 and sparse vectors (Milvus 2.5) and keeps one
vector field per collection (more came with 2.4): what rayprism refuses on such a server is tested
against it too.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports no one listens on (all bound at once, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@contextlib.contextmanager
def milvus_server(base_dir: Path) -> Iterator[str]:
    """A running server's URI (``http://127.0.0.1:<port>``), stopped on exit; its data and logs live
    under ``base_dir``."""
    from milvus import MilvusServer, MilvusServerConfig

    config = MilvusServerConfig(data_dir=str(base_dir))
    port_keys = [key for key in config.configurable_items if key.endswith("_port")]
    *ports, web_port = free_ports(len(port_keys) + 1)
    config.update(**dict(zip(port_keys, ports)))
    server = MilvusServer(config)
    server.webservice_port = web_port  # health and metrics (9091 by default): the first free one from here
    server.start()
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
