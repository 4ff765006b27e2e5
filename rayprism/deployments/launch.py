"""Start (or join) Ray, deploy the service, report where it listens, stop cleanly.

On a machine where rayprism starts Ray itself, replicas answer HTTP directly
(Ray Serve's direct ingress) on the configured port: no proxy hop, which on a
small machine is the difference between ~80 and ~250 requests/s. Ray reads
these settings from the environment of its processes, so they are set before
Ray starts and before ``ray.serve`` is imported. Ray's own proxy moves to a
free port. On a cluster that already runs, its own settings apply (the Helm
chart enables direct ingress behind HAProxy).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal

from rayprism.platform.config import ServeConfig, is_lite_uri
from rayprism.platform.config.serve import API_KEYS_VARIABLE
from rayprism.platform.errors import ConfigError, NotReadyError
from rayprism.platform.models.source import resolve_source
from rayprism.platform.ray_runtime import cluster_address, start_ray

READY_TIMEOUT_S = 900


PROXY_READINESS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}
"""A proxy (Ray's own, or HAProxy) starts beside replicas loading models: on a busy small machine
Serve's 5 s for its readiness would have it killed and restarted over and over (and ``serve.start``
fail with the killed proxy's error)."""


def direct_ingress_env(port: int, max_replicas: int) -> dict[str, str]:
    """Ray settings that make replica ``i`` answer HTTP on ``port + i``."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        **PROXY_READINESS,
        # No load balancer sits in front to drain from: stop in seconds, not half a minute.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # Serve holds a dead replica's port back (150 s by default) so that an HAProxy in front can
        # forget it; with no proxy in front, that only means minutes of "connection refused" after a
        # crash. Let the replacement listen on the same port at once.
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + max_replicas),
    }


def haproxy_env(port: int, max_replicas: int, scratch: Path) -> dict[str, str]:
    """Ray settings for several replicas behind one port: Ray's bundled HAProxy answers on ``port`` and
    spreads requests over the replicas, each answering on a port just above it. ``scratch`` keeps this
    service's HAProxy files apart from any other service's on the machine."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        **PROXY_READINESS,
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1 + max_replicas),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(scratch / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(scratch / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(scratch),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(scratch / "server-state"),
    }


def proxy_env() -> dict[str, str]:
    """Ray settings for Ray Serve's own HTTP proxy in front of every replica (none answers HTTP itself)."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0", **PROXY_READINESS}


def ingress_path(config: ServeConfig) -> Literal["direct", "haproxy", "proxy"]:
    """What listens on the configured port when this process starts Ray: the one replica itself
    (no proxy hop: the fastest path on one machine), Ray's HAProxy in front of several replicas, or
    Serve's own proxy, when the config asks for it."""
    if config.server.ingress == "proxy":
        return "proxy"
    return "direct" if config.deployment.replicas.max == 1 else "haproxy"


def ingress_env(config: ServeConfig) -> dict[str, str]:
    """The Ray settings for the config's ingress path."""
    port, max_replicas = config.server.port, config.deployment.replicas.max
    path = ingress_path(config)
    if path == "proxy":
        return proxy_env()
    if path == "direct":
        return direct_ingress_env(port, max_replicas)
    # Short: Ray adds a 56-character node id below it, and HAProxy's socket paths stop at 97 characters.
    # The port makes it this service's own.
    return haproxy_env(port, max_replicas, Path(tempfile.gettempdir()) / f"rph-{port}")


def apply_env(settings: dict[str, str]) -> None:
    """Set each variable unless the user already chose a value."""
    for name, value in settings.items():
        os.environ.setdefault(name, value)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the server itself will: a port whose last connections linger in TIME_WAIT is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror} (pick another with --port)") from None


def preflight(config: ServeConfig, echo: Callable[[str], None]) -> None:
    """Fail before Ray starts on what can be checked here (model sources, API keys); warn about an open door."""
    for model in config.models:
        resolve_source(model.source)
    if not config.server.resolved_api_keys() and not is_loopback(config.server.host):
        echo(f"warning: serving on {config.server.host} without an API key: anyone who can reach port "
             f"{config.server.port} can embed, read, write and drop collections. Set server.api_keys in the "
             f"config or ${API_KEYS_VARIABLE}.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only the machine's resolver knows
        return False


def absolute_store_paths(config: ServeConfig) -> ServeConfig:
    """Milvus Lite paths made absolute here: the store runs in a Ray worker with another working directory."""

    def absolute(uri: str | None) -> str | None:
        return str(Path(uri).expanduser().resolve()) if uri and is_lite_uri(uri) else uri

    return config.model_copy(
        update={
            "store": config.store.model_copy(update={"uri": absolute(config.store.uri)}),
            "collections": [c.model_copy(update={"uri": absolute(c.uri)}) for c in config.collections],
        }
    )


def service_url(config: ServeConfig) -> str:
    return f"http://{config.server.host}:{config.server.port}"


def deploy(config: ServeConfig, *, direct_ingress: bool) -> None:
    """Run the application on the Ray this process is connected to; returns once replicas are up.
    With direct ingress and one replica, Ray's own proxy moves aside to a free port."""
    from ray import serve

    from rayprism.deployments.app import APP_NAME, build_application

    proxy_port = 0 if direct_ingress and ingress_path(config) == "direct" else config.server.port
    serve.start(http_options={"host": config.server.host, "port": proxy_port})
    application = build_application(absolute_store_paths(config))
    serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)


def wait_until_ready(url: str, *, timeout_s: float = READY_TIMEOUT_S, api_key: str | None = None) -> None:
    """Poll ``/health`` until every model is loaded; a model that fails to load ends the wait."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=5,
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else None)
            if response.status_code == 200:
                return
            last = response.json()
            if last.get("status") == "error":
                problems = "; ".join(f"{subject}: {problem}" for subject, problem in last.get("errors", {}).items())
                raise NotReadyError(f"the service could not start: {problems}")
        except httpx.TransportError:
            last = {"status": "starting"}
        time.sleep(1)
    raise NotReadyError(f"service at {url} not ready after {timeout_s:.0f}s (last health: {last})")


def readiness_urls(config: ServeConfig, *, joining: bool) -> list[str]:
    """Where to ask whether the service is ready. Behind HAProxy one answer speaks for one replica,
    so each of the first ``replicas.min`` replicas is asked on its own port (ports are handed out
    lowest first, just above the service's). Serve's proxy hides the replicas: its first 200 means
    one of them is ready."""
    if joining or ingress_path(config) != "haproxy":
        return [service_url(config)]
    port = config.server.port
    return [f"http://{config.server.host}:{port + 1 + index}" for index in range(config.deployment.replicas.min)]


def seed_collection(url: str, config: ServeConfig, echo: Callable[[str], None], api_key: str | None = None) -> None:
    """Fill the seed collection from its Markdown files, the first time only (it is empty)."""
    from rayprism.client import Client, SourceDocument
    from rayprism.platform.chunking import chunk_files

    seed = config.seed
    with Client(url, api_key=api_key) as client:
        if client.collection(seed.collection)["count"] > 0:
            return
        root = Path.cwd()
        paths = sorted({path for pattern in seed.files for path in root.glob(pattern) if path.is_file()})
        documents = [SourceDocument(d["id"], d) for d in chunk_files(paths, root)]
        echo(f"first start: filling {seed.collection!r} with {len(documents)} chunks of {len(paths)} files ...")
        summary = client.ingest(seed.collection, documents)
    echo(f"filled {seed.collection!r}: {summary.upserted} chunks in {summary.seconds:.1f} s")


def wait_for_stop_signal() -> None:
    """Block quietly until SIGINT or SIGTERM (a spinning driver would starve the replicas).

    The handler only flips a flag: a handler that takes a lock (``threading.Event.set``) can run
    while this thread holds that same lock in ``Event.wait``, and then the process never stops."""
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: received.append(number))
    while not received:
        time.sleep(0.5)


def serve_forever(config: ServeConfig, *, address: str | None = None, echo: Callable[[str], None] = print,
                  verbose: bool = False) -> None:
    preflight(config, echo)
    joining = cluster_address(address) is not None
    if not joining:
        check_port_free(config.server.host, config.server.port)
        apply_env(ingress_env(config))

    import ray
    from ray import serve

    from rayprism.deployments.app import APP_NAME

    start_ray(address, verbose=verbose)
    try:
        deploy(config, direct_ingress=not joining)
        url = service_url(config)
        echo(f"loading models {sorted(m.name for m in config.models)} ...")
        api_key = next(iter(config.server.resolved_api_keys()), None)  # the service's own calls
        for replica in readiness_urls(config, joining=joining):
            wait_until_ready(replica, api_key=api_key)
        if config.seed is not None:
            seed_collection(url, config, echo, api_key)
        echo(f"rayprism is serving at {url}  (POST {url}/v1/embeddings, GET {url}/health)")
        if config.seed is not None:
            echo(f'try: rayprism search {config.seed.collection} "how do I run the tests" --url {url}')
        echo("press Ctrl-C to stop")
        wait_for_stop_signal()
        echo("stopping ...")
    finally:
        serve.delete(APP_NAME)  # replicas finish what is in flight; a cluster's other applications run on
        if not joining:  # the local Ray ends with this process (serve.shutdown would only add Ray's noise)
            ray.shutdown()
    echo("stopped")
