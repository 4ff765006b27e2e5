"""What a local service exposes to the network: every port its process tree listens on, and whether
another machine could reach it. Asked of the kernel (psutil), never of rayprism or Ray's own records."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import grpc
import psutil


@dataclass(frozen=True)
class Listener:
    pid: int
    process: str
    ip: str
    port: int

    @property
    def loopback_only(self) -> bool:
        address = ipaddress.ip_address(self.ip.split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback


def listeners(root_pid: int) -> list[Listener]:
    """Every listening TCP socket of ``root_pid`` and its descendants (Ray's GCS, raylet, workers, agents,
    HAProxy: all started below the service's own process)."""
    root = psutil.Process(root_pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            name = process.name()
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        found += [Listener(process.pid, name, connection.laddr.ip, connection.laddr.port)
                  for connection in connections if connection.status == psutil.CONN_LISTEN]
    return found


def other_addresses() -> list[str]:
    """This machine's addresses other than loopback: where another machine would connect."""
    return sorted({address.address.split("%")[0] for addresses in psutil.net_if_addrs().values()
                   for address in addresses if address.family in (socket.AF_INET, socket.AF_INET6)
                   and not ipaddress.ip_address(address.address.split("%")[0]).is_loopback
                   and not ipaddress.ip_address(address.address.split("%")[0]).is_link_local})


def answers_without_token(listener: Listener) -> dict[str, str]:
    """How each of the machine's other addresses answers a call to ``listener``'s port from a client with
    no Ray token: "refused", "UNAUTHENTICATED" (Ray's token check), or what else came back. Addresses
    where some other program listens on that port (a fixed port another Ray also binds) are left out.
    The call is the one Ray Serve's replicas take from each other (their gRPC port listens on every
    interface whatever Ray's node address; Ray guards it with its token)."""
    theirs = {(connection.laddr.ip, connection.laddr.port) for connection in psutil.net_connections(kind="tcp")
              if connection.status == psutil.CONN_LISTEN and connection.pid != listener.pid}
    answers = {}
    for address in other_addresses():
        if {(address, listener.port), ("0.0.0.0", listener.port), ("::", listener.port)} & theirs:
            continue
        try:
            socket.create_connection((address, listener.port), timeout=2).close()
        except OSError:
            answers[address] = "refused"
            continue
        host = f"[{address}]" if ":" in address else address
        with grpc.insecure_channel(f"{host}:{listener.port}") as channel:
            call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest",
                                       request_serializer=bytes, response_deserializer=bytes)
            try:
                call(b"", timeout=5)
                answers[address] = "answered"
            except grpc.RpcError as error:
                answers[address] = error.code().name
    return answers


def assert_private(root_pid: int, api_port: int) -> None:
    """Another machine gets nothing from the service: each port its process tree opened listens on
    loopback only, or (Serve's replica-to-replica gRPC port) refuses a caller without Ray's token."""
    found = listeners(root_pid)
    assert api_port in {listener.port for listener in found}, found  # the check sees the service's own sockets
    assert len({listener.pid for listener in found}) >= 3, found  # and Ray's (GCS, raylet, workers), not just one
    assert {listener.port for listener in found if listener.port == api_port and not listener.loopback_only} == set()
    public = {f"{listener.process}:{listener.ip}:{listener.port}": answers_without_token(listener)
              for listener in found if not listener.loopback_only}
    assert all(set(answers.values()) <= {"refused", "UNAUTHENTICATED"} for answers in public.values()), public
    assert len(public) <= len({listener.pid for listener in found if listener.process.startswith("ray::ServeReplica")}), \
        f"more than Serve's one gRPC port per replica listens beyond loopback: {public}"
