"""A Ray cluster of several nodes on this one machine, for the multi-node tests.

Each node is a ``ray start --block`` process (a raylet of its own, as on separate machines) in a process
group of its own, on ports the system hands out: killing a node is killing its group (what a lost
machine looks like to the rest of the cluster), and nothing here touches another Ray on the machine
(never ``ray stop``). Custom resources (``{"gpu_node": 1}``) stand in for kinds of nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.milvus_server import free_ports

RAY = str(Path(sys.executable).parent / "ray")
# Ports each node would otherwise take from Ray's fixed defaults, which the session's own Ray holds.
NODE_PORT_OPTIONS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
WORKER_PORTS_PER_NODE = 200
NODE_STARTS = 5
"""Tries to start a node whose raylet gives up: Ray 2.60's raylet waits a fixed 15 s for its dashboard agent
(a Python process) to write its port, and ends the node when it is slower, which it is on a loaded 2-core
machine (30 s seen); ``ray start --block`` runs on without it."""


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    options: list[str]
    """What :meth:`RayCluster._launch` was given, to start the node again."""
    node_id: str = ""
    starts: int = 1


class RayCluster:
    """Start with :meth:`start`, add nodes with :meth:`add_node`, lose one with :meth:`kill`, end with :meth:`stop`."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.temp_dir = tempfile.mkdtemp(prefix="rpc-", dir="/tmp")  # Ray's socket paths must stay short
        self.nodes: dict[str, Node] = {}
        self.gcs_address = ""
        self.dashboard_url = ""
        # Worker ports between Ray's default range (10002-19999, other Rays here) and the ephemeral ports
        # (32768 and up) that free_ports hands out: room for 5 nodes of 200 ports per test process.
        self._next_worker_port = 20000 + (os.getpid() % 10) * 1200

    def start(self, *, num_cpus: float, resources: dict[str, float] | None = None, timeout_s: float = 180) -> None:
        gcs, dashboard, client = free_ports(3)
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dashboard}"
        self._launch("head", ["--head", f"--port={gcs}", f"--num-cpus={num_cpus}", "--include-dashboard=true",
                              "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                              f"--ray-client-server-port={client}", f"--temp-dir={self.temp_dir}",
                              f"--resources={json.dumps(resources or {})}"])
        self._wait_for_nodes(timeout_s)

    def add_node(self, name: str, *, num_cpus: float, resources: dict[str, float] | None = None,
                 timeout_s: float = 180) -> Node:
        """A worker node that has joined the cluster (its Ray node id known)."""
        self._launch(name, [f"--address={self.gcs_address}", f"--num-cpus={num_cpus}",
                            f"--resources={json.dumps(resources or {})}"])
        self._wait_for_nodes(timeout_s)
        return self.nodes[name]

    def kill(self, name: str) -> None:
        """The node's raylet and every worker it started, at once (SIGKILL: no goodbye to the cluster)."""
        node = self.nodes[name]
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(60)

    def alive_nodes(self) -> dict[str, str]:
        """Node name → node id of the nodes the cluster counts as alive."""
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        return {node.node_name: node.node_id for node in nodes}

    def actors(self, class_name: str) -> list:
        """This cluster's alive actors of ``class_name`` (each with ``node_id`` and ``pid``)."""
        from ray.util.state import list_actors

        return list_actors(address=self.dashboard_url, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                           detail=True, raise_on_missing_output=False)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGKILL)  # a graceful stop takes 30 s per node
                node.process.wait(60)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _launch(self, name: str, options: list[str], starts: int = 1) -> None:
        own_ports = [f"--{option}={port}" for option, port in zip(NODE_PORT_OPTIONS, free_ports(len(NODE_PORT_OPTIONS)))]
        low = self._next_worker_port
        self._next_worker_port += WORKER_PORTS_PER_NODE
        process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--node-name={name}", "--node-ip-address=127.0.0.1",
             *own_ports,
             f"--min-worker-port={low}", f"--max-worker-port={low + WORKER_PORTS_PER_NODE - 1}", *options],
            stdout=(Path(self.temp_dir) / f"{name}.log").open("w"), stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )
        self.nodes[name] = Node(name, process, options, starts=starts)

    def _start_again(self, node: Node) -> None:
        """A node whose raylet ended before it joined: end what is left of it, start it afresh."""
        assert node.starts < NODE_STARTS, f"node {node.name}: its raylet ended {node.starts} times{self.raylet_failures()}"
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(60)
        self._launch(node.name, node.options, starts=node.starts + 1)

    def _wait_for_nodes(self, timeout_s: float) -> None:
        """Until every node started and not killed is alive in the cluster (a killed one may still
        count as alive for a while: the cluster learns of it by missed heartbeats)."""
        deadline = time.monotonic() + timeout_s
        joined: dict[str, str] = {}  # a raylet that ends after it joined is a failure to see, not to retry
        while True:
            running = {name: node for name, node in self.nodes.items() if node.process.returncode is None}
            for node in running.values():
                assert node.process.poll() is None, (
                    f"node {node.name} ended (rc {node.process.returncode}): {self.log_tail(node.name)}")
                if node.name not in joined and raylet_ended(node.process.pid):
                    self._start_again(node)
            try:
                alive = self.alive_nodes() if self.dashboard_ready() else {}
            except Exception:  # the dashboard answers before its state API is up
                alive = {}
            joined = alive
            if all(name in alive for name in running):
                for name in running:
                    self.nodes[name].node_id = alive[name]  # a node started again is a new Node
                return
            assert time.monotonic() < deadline, (f"{sorted(running)} not up within {timeout_s} s (alive: {sorted(alive)})"
                                                 f"{self.raylet_failures()}")
            time.sleep(1)

    def raylet_failures(self) -> str:
        """The fatal lines of raylets that ended, as text to append to an error: a raylet that gives up
        leaves its ``ray start --block`` running, so a node that never joins says why only there."""
        logs = Path(self.temp_dir, "session_latest", "logs")
        lines = [line.strip() for path in sorted(logs.glob("raylet*.out"))
                 for line in path.read_text(errors="replace").splitlines() if " C " in line[:40]]
        return "; raylet failures: " + " | ".join(line[-400:] for line in lines) if lines else ""

    def log_tail(self, name: str) -> str:
        return (Path(self.temp_dir) / f"{name}.log").read_text()[-2000:]

    def dashboard_ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.dashboard_url}/api/version", timeout=2).status_code < 500
        except httpx.TransportError:
            return False


def raylet_ended(pid: int) -> bool:
    """Whether the raylet that ``ray start`` (``pid``) started has ended (a zombie: ``ray start --block``
    does not reap it)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if child.name() == "raylet" and child.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def cluster_env() -> dict[str, str]:
    """This environment without what points at the session's own Ray or sets its Serve up: the cluster's
    processes and the commands run against it see only the cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["RAY_AUTH_MODE"] = "disabled"  # a throwaway cluster on loopback: no token to hand every client
    env["RAY_raylet_start_wait_time_s"] = "180"  # a node's raylet starts slowly on a loaded 2-core machine (30 s default)
    return env
