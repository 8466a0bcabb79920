"""Tier (c): binding UDP and TCP on one port, IPv4, IPv6, dual stack, host names."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.conftest import HAS_IPV6
from tests.net.helpers import RawUdp
from udpkit import AsyncClient, UsageError
from udpkit.server import Server, ServerConfig
from udpkit.server.binding import bind

needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")


async def test_port_zero_gives_one_port_for_both_transports(server: Server) -> None:
    assert server.port != 0
    assert [address[1] for address in server.addresses] == [server.port]


@needs_ipv6
async def test_dual_stack_serves_ipv4_and_ipv6() -> None:
    async with Server(ServerConfig(host="::", port=0)) as server:
        for host in ("127.0.0.1", "::1"):
            for transport in ("udp", "tcp"):
                async with AsyncClient(host, server.port, transport=transport) as client:
                    assert await client.request(b"x") == b"Hello, x!"


async def test_host_name_binds_what_it_resolves_to() -> None:
    async with Server(ServerConfig(host="localhost", port=0)) as server:
        assert server.addresses
        async with AsyncClient("localhost", server.port) as client:
            assert await client.request(b"name") == b"Hello, name!"


async def test_udp_only_and_tcp_only() -> None:
    async with Server(ServerConfig(port=0, tcp=False)) as server:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
    async with Server(ServerConfig(port=0, udp=False)) as server:
        raw = RawUdp("127.0.0.1")
        try:
            await raw.send(b"x", ("127.0.0.1", server.port))
            assert await raw.recv(timeout=0.2) is None
        finally:
            raw.close()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot bind UDP and TCP on 127.0.0.1:{port}"):
            bind("127.0.0.1", port, udp=True, tcp=True)


def test_udp_sockets_never_get_so_reuseaddr() -> None:
    bound = bind("127.0.0.1", 0, udp=True, tcp=True)
    try:
        [udp], [tcp] = bound.udp, bound.tcp
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    finally:
        bound.close()


def test_unresolvable_host_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="cannot resolve host"):
        bind("no-such-host.invalid", 0, udp=True, tcp=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port must be"),
        ({"udp": False, "tcp": False}, "nothing to serve"),
        ({"max_request": 0}, "max_request"),
        ({"tcp_framing": "json"}, "tcp_framing"),
    ],
)
def test_bad_config_is_a_usage_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


async def test_failed_startup_releases_the_port() -> None:
    """Regression: a metrics port in use failed start-up but left UDP/TCP bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        server = Server(ServerConfig(port=0, metrics=("127.0.0.1", metrics_port)))
        with pytest.raises(UsageError, match="cannot serve metrics"):
            await server.startup()
    port = server.port
    async with Server(ServerConfig(port=port)) as again:  # the port is free again
        assert again.port == port
