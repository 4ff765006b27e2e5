"""Fetching image and audio inputs given as http(s) URLs, where the operator allows it, without SSRF.

Off by default (``server.allow_remote_media``): a URL makes the service connect wherever a caller
points it. When on, the address every connection actually uses is checked at connect time, after
name resolution, and must be a public one: loopback, private, link-local (cloud metadata),
multicast and reserved addresses are refused, and a name that resolves to one is refused too (no
DNS rebinding between check and use: the checked address is the one connected to). Redirects are
not followed, and a body larger than the service's request limit is cut off with an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Sequence

import httpcore

from rayprism.platform.errors import InvalidInputError

TIMEOUT_S = 10.0
SCHEMES = ("http://", "https://")


def is_url(item: object) -> bool:
    return isinstance(item, str) and item.lower().startswith(SCHEMES)


class _PublicAddressesOnly(httpcore.AsyncNetworkBackend):
    """A network backend that resolves names itself and connects only to public addresses."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        infos = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        addresses = [info[4][0] for info in infos]
        refused = [address for address in addresses if not _public(address)]
        if not addresses or refused:
            raise _Refused(f"{host} resolves to {refused[0] if refused else 'nothing'}, which is not a public address")
        return await self._inner.connect_tcp(addresses[0], port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args, **kwargs):
        raise _Refused("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Refused(Exception):
    pass


def _public(address: str) -> bool:
    """Routable on the internet: not loopback, private, link-local (cloud metadata), reserved or
    multicast (which Python counts as global)."""
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


class RemoteMedia:
    """Replaces the URLs among a request's inputs by the bytes they point to."""

    def __init__(self, *, max_bytes: int, timeout_s: float = TIMEOUT_S):
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._pool = httpcore.AsyncConnectionPool(network_backend=_PublicAddressesOnly(), max_connections=16)

    async def resolve(self, inputs: Sequence[object]) -> list[object]:
        fetched = await asyncio.gather(*(self._fetch(index, item) for index, item in enumerate(inputs) if is_url(item)))
        by_index = dict(fetched)
        return [by_index.get(index, item) for index, item in enumerate(inputs)]

    async def _fetch(self, index: int, url: str) -> tuple[int, bytes]:
        timeouts = {"connect": self._timeout_s, "read": self._timeout_s, "write": self._timeout_s,
                    "pool": self._timeout_s}
        try:
            async with self._pool.stream("GET", url, extensions={"timeout": timeouts}) as response:
                if response.status != 200:
                    raise _invalid(index, f"answered HTTP {response.status} (redirects are not followed)")
                body = bytearray()
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise _invalid(index, f"is larger than {self._max_bytes} bytes")
                return index, bytes(body)
        except InvalidInputError:
            raise
        except _Refused as error:
            raise _invalid(index, f"cannot be fetched: {error}") from None
        except (httpcore.TimeoutException, asyncio.TimeoutError):
            raise _invalid(index, f"did not answer within {self._timeout_s:g} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as error:
            raise _invalid(index, f"cannot be fetched: {type(error).__name__}") from None


def _invalid(index: int, message: str) -> InvalidInputError:
    return InvalidInputError(f"input[{index}]: the URL {message}", param=f"input[{index}]")
