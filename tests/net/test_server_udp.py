"""Tier (c): the UDP server on real loopback sockets, IPv4 and IPv6, port 0."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from tests.net.helpers import RawUdp, wait_for_counters
from udpkit.core.handler import Handler, Peer, Reply
from udpkit.server import Server, ServerConfig

# Every test here runs on the C fast path and on the pure-Python path.
pytestmark = pytest.mark.usefixtures("udp_path")


@pytest.fixture
async def raw(loopback: str) -> AsyncIterator[RawUdp]:
    sock = RawUdp(loopback)
    yield sock
    sock.close()


async def test_three_names_get_the_tutorials_greetings(server: Server, raw: RawUdp,
                                                       loopback: str) -> None:
    for name in (b"Michael", b"Tracy", b"Sarah"):
        await raw.send(name, (loopback, server.port))
        assert await raw.recv() == b"Hello, " + name + b"!"


async def test_line_ends_move_after_the_bang(server: Server, raw: RawUdp, loopback: str) -> None:
    await raw.send(b"Michael\n", (loopback, server.port))
    assert await raw.recv() == b"Hello, Michael!\n"
    await raw.send(b"Tracy\r\n", (loopback, server.port))
    assert await raw.recv() == b"Hello, Tracy!\r\n"


async def test_bad_input_is_dropped_counted_and_the_server_keeps_serving(
    loopback: str, raw: RawUdp
) -> None:
    config = ServerConfig(host=loopback, port=0, max_request=1024, recv_buffer=2048)
    async with Server(config) as server:
        address = (loopback, server.port)
        await raw.send(b"", address)  # empty
        await raw.send(b"x" * 1025, address)  # over max_request
        await raw.send(b"y" * 4000, address)  # over the receive buffer: truncated
        await raw.send(b"\xff\xfe\x00", address)  # not UTF-8: greeted as is
        assert await raw.recv() == b"Hello, \xff\xfe\x00!"
        await raw.send(b"x" * 1024, address)  # exactly the limit is fine
        assert await raw.recv() == b"Hello, " + b"x" * 1024 + b"!"
        assert await raw.recv(timeout=0.2) is None  # nothing answered the bad three
        stats = await wait_for_counters(server, "udp", 5)
        assert (stats.received, stats.replied) == (5, 2)
        assert (stats.dropped_empty, stats.dropped_oversize, stats.dropped_truncated) == (1, 1, 1)


async def test_truncation_is_detected_even_within_max_request(loopback: str,
                                                              raw: RawUdp) -> None:
    """A datagram cut by a small receive buffer is never answered with a cut greeting."""
    config = ServerConfig(host=loopback, port=0, max_request=100, recv_buffer=50)
    async with Server(config) as server:
        assert server.config.recv_buffer == 101  # raised above max_request
        await raw.send(b"z" * 500, (loopback, server.port))
        assert await raw.recv(timeout=0.3) is None
        stats = await wait_for_counters(server, "udp", 1)
        assert stats.dropped_truncated == 1


async def test_echo_app(loopback: str, raw: RawUdp) -> None:
    async with Server(ServerConfig(app="echo", host=loopback, port=0)) as server:
        await raw.send(b"\x00ping\n", (loopback, server.port))
        assert await raw.recv() == b"\x00ping\n"


async def test_handler_that_raises_is_counted_and_the_server_keeps_serving(
    loopback: str, raw: RawUdp, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: bytes, peer: Peer) -> Reply:
        if request == b"boom":
            raise RuntimeError("boom")
        if request == b"silent":
            return None
        if request == b"wrong":
            return "not bytes"  # type: ignore[return-value]
        return bytearray(b"ok:" + request)  # type: ignore[return-value]  # bytes-like is accepted

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:
        address = (loopback, server.port)
        with caplog.at_level(logging.ERROR, logger="udpkit.server"):
            for payload in (b"boom", b"silent", b"wrong", b"fine"):
                await raw.send(payload, address)
            assert await raw.recv() == b"ok:fine"
            stats = await wait_for_counters(server, "udp", 4)
        assert (stats.handler_errors, stats.no_reply, stats.replied) == (2, 1, 1)
        assert "handler failed" in caplog.text
        assert "handler returned str" in caplog.text


async def test_async_handler_and_peer_information(loopback: str, raw: RawUdp) -> None:
    seen: list[Peer] = []

    async def handler(request: bytes, peer: Peer) -> bytes:
        seen.append(peer)
        await asyncio.sleep(0.01)
        return request.upper()

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:
        await raw.send(b"abc", (loopback, server.port))
        assert await raw.recv() == b"ABC"
    assert seen[0].transport == "udp"
    assert seen[0].host == loopback
    assert seen[0].port == raw.sock.getsockname()[1]


async def test_async_handler_that_raises_is_counted(loopback: str, raw: RawUdp) -> None:
    async def handler(request: bytes, peer: Peer) -> bytes:
        raise ValueError("nope")

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:
        await raw.send(b"abc", (loopback, server.port))
        stats = await wait_for_counters(server, "udp", 1)
        assert stats.handler_errors == 1


async def test_many_clients_at_once_each_get_their_own_reply(server: Server,
                                                             loopback: str) -> None:
    clients = [RawUdp(loopback) for _ in range(50)]
    try:
        for index, client in enumerate(clients):
            await client.send(b"c%d" % index, (loopback, server.port))
        replies = [await client.recv() for client in clients]
    finally:
        for client in clients:
            client.close()
    assert replies == [b"Hello, c%d!" % index for index in range(50)]
    stats = await wait_for_counters(server, "udp", 50)
    assert stats.replied == 50


async def test_access_log_escapes_control_characters(
    loopback: str, raw: RawUdp, caplog: pytest.LogCaptureFixture
) -> None:
    async with Server(ServerConfig(host=loopback, port=0, access_log=True)) as server:
        with caplog.at_level(logging.INFO, logger="udpkit.access"):
            await raw.send(b"Mal\x1b[2J\nlory\xff", (loopback, server.port))
            await raw.recv()
    [record] = [r for r in caplog.records if r.name == "udpkit.access"]
    message = record.getMessage()
    assert "Received from" in message
    assert "Mal\\x1b[2J\\nlory\\xff" in message
    assert "\x1b" not in message
    assert "\n" not in message


async def test_slow_async_handler_does_not_block_other_requests(loopback: str,
                                                                raw: RawUdp) -> None:
    release = asyncio.Event()

    async def handler(request: bytes, peer: Peer) -> bytes:
        if request == b"slow":
            await release.wait()
        return request

    app: Handler = handler
    async with Server(ServerConfig(app=app, host=loopback, port=0)) as server:
        await raw.send(b"slow", (loopback, server.port))
        await raw.send(b"fast", (loopback, server.port))
        assert await raw.recv() == b"fast"
        release.set()
        assert await raw.recv() == b"slow"
