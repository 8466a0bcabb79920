"""Tier (c): TCP with the PROXY protocol on: the client the header names is the peer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.net.test_hardening import read_all
from tests.unit.test_proxy_protocol import tlv, v1, v2
from udpkit.core.errors import UsageError
from udpkit.core.handler import Peer
from udpkit.server import Server, ServerConfig

pytestmark = pytest.mark.usefixtures("tcp_path")


def who(request: bytes, peer: Peer) -> bytes:
    return f"{peer}".encode()


async def exchange(host: str, port: int, *chunks: bytes) -> list[bytes]:
    """Send ``chunks`` (one write each, yielding between), then ``exit``; the lines back."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"exit\n")
        return (await read_all(reader)).splitlines()
    finally:
        writer.close()


def config(**overrides: object) -> ServerConfig:
    settings: dict[str, object] = {"app": who, "port": 0, "udp": False, "proxy_protocol": True,
                                   "proxy_trusted": ("loopback",)}
    settings.update(overrides)
    return ServerConfig(**settings)  # type: ignore[arg-type]


async def test_v1_header_makes_the_real_client_the_peer(loopback: str) -> None:
    async with Server(config(host=loopback)) as server:
        lines = await exchange(loopback, server.port,
                               v1("TCP4", "192.0.2.7", "198.51.100.1", 40000, 9999) + b"a\n")
    assert lines == [b"Welcome!", b"192.0.2.7:40000"]
    assert server.stats()["tcp"].replied == 1


async def test_v2_header_split_byte_by_byte_with_tlvs() -> None:
    header = v2(("2001:db8::7", 5353), ("2001:db8::1", 9999), tlvs=tlv(0x05, b"unique-id"))
    async with Server(config()) as server:
        lines = await exchange("127.0.0.1", server.port,
                               *(header[i : i + 1] for i in range(len(header))), b"a\n")
    assert lines == [b"Welcome!", b"[2001:db8::7]:5353"]


async def test_v2_local_keeps_the_balancers_own_address() -> None:
    async with Server(config()) as server:
        lines = await exchange("127.0.0.1", server.port,
                               v2(("192.0.2.1", 1), ("192.0.2.2", 2), command=0x0) + b"a\n")
    assert lines[0] == b"Welcome!"
    assert lines[1].startswith(b"127.0.0.1:")


async def test_access_log_and_limits_see_the_real_client(caplog: pytest.LogCaptureFixture) -> None:
    """The deny list applies to the address in the header, not to the balancer's."""
    caplog.set_level(logging.INFO, logger="udpkit")
    async with Server(config(app="greeting", access_log=True, deny=("203.0.113.0/24",))) as server:
        served = await exchange("127.0.0.1", server.port,
                                v1("TCP4", "192.0.2.7", "127.0.0.1", 40000, 9999) + b"Michael\n")
        denied = await exchange("127.0.0.1", server.port,
                                v1("TCP4", "203.0.113.9", "127.0.0.1", 1, 9999) + b"Michael\n")
        stats = server.stats()["tcp"]
    assert served == [b"Welcome!", b"Hello, Michael!"]
    assert denied == []
    assert stats.connections_denied == 1
    assert "Received from 192.0.2.7:40000 over tcp" in caplog.text
    assert "203.0.113.9" in caplog.text  # the abuse log names the real client


async def test_bad_header_is_counted_and_closed() -> None:
    async with Server(config()) as server:
        lines = await exchange("127.0.0.1", server.port, b"GET / HTTP/1.0\r\n\r\n")
        stats = server.stats()["tcp"]
    assert lines == []
    assert stats.closed_bad_proxy == 1
    assert stats.received == 0
    assert "bad_proxy=1" in server.summary()


async def test_untrusted_peer_is_served_directly_and_its_header_not_honoured() -> None:
    async with Server(config(proxy_trusted=("10.0.0.0/8",))) as server:
        lines = await exchange("127.0.0.1", server.port,
                               v1("TCP4", "192.0.2.7", "127.0.0.1", 1, 9999))
    assert lines[0] == b"Welcome!"
    assert lines[1].startswith(b"127.0.0.1:")  # the "PROXY ..." line was just a request


async def test_a_header_that_never_comes_times_out_as_slow() -> None:
    async with Server(config(tcp_line_timeout=0.2)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PROXY TCP4 ")
        try:
            assert await read_all(reader, timeout=10) == b""
        finally:
            writer.close()
        assert server.stats()["tcp"].closed_slow == 1


async def test_without_proxy_protocol_a_header_is_an_ordinary_request() -> None:
    async with Server(config(proxy_protocol=False)) as server:
        lines = await exchange("127.0.0.1", server.port,
                               v1("TCP4", "192.0.2.7", "127.0.0.1", 1, 9999))
    assert lines[1].startswith(b"127.0.0.1:")


def test_proxy_protocol_without_trusted_networks_refuses_to_start() -> None:
    """Regression (issue 16, item 14): with no ``--proxy-trusted`` every client could
    name its own source in a PROXY header and slip past limits and per-source caps."""
    with pytest.raises(UsageError, match="--proxy-trusted"):
        config(proxy_trusted=())


async def test_proxy_trusted_any_lets_every_peer_send_the_header() -> None:
    async with Server(config(proxy_trusted=("any",))) as server:
        lines = await exchange("127.0.0.1", server.port,
                               v1("TCP4", "192.0.2.7", "198.51.100.1", 40000, 9999) + b"a\n")
    assert lines == [b"Welcome!", b"192.0.2.7:40000"]
