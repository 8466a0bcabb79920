"""The one interface every transport calls: a handler gets request bytes and
the peer, and returns reply bytes or ``None`` for no reply.

Rule: handlers are transport-agnostic.  UDP hands over one datagram, TCP one
framed message (without its line terminator); both go through the same
callable, sync or async.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple, TypeAlias

from udpkit.core.sources import canonical_host

Address: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
"""A socket address as the standard library gives it (IPv4 or IPv6)."""

TransportName: TypeAlias = Literal["udp", "tcp"]
"""The one definition of a transport's name (server, client, bench, ping)."""


class Peer(NamedTuple):
    """Who sent a request, and over which transport."""

    address: Address
    transport: TransportName

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def __str__(self) -> str:
        return format_address(self.address)


Reply: TypeAlias = bytes | None
SyncHandler: TypeAlias = Callable[[bytes, Peer], Reply]
AsyncHandler: TypeAlias = Callable[[bytes, Peer], Awaitable[Reply]]
Handler: TypeAlias = Callable[[bytes, Peer], Reply | Awaitable[Reply]]
"""``handler(request, peer)`` returns bytes, ``None`` or an awaitable of either."""


def format_address(address: Address | tuple[str, int]) -> str:
    """``127.0.0.1:9999`` or ``[::1]:9999``; an IPv4 peer of a dual-stack socket
    (``::ffff:127.0.0.1``) as the IPv4 address it is (see :mod:`udpkit.core.sources`)."""
    host, port = canonical_host(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
