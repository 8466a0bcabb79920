"""Tier (c): AsyncClient and Client against real servers and hostile fakes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from tests.net.helpers import family_of
from udpkit import (
    AsyncClient,
    Client,
    ConnectionClosed,
    LocalProtocolError,
    RequestRefused,
    RequestTimeout,
    RetryPolicy,
    UnexpectedReply,
    UsageError,
)
from udpkit.server import Server, ServerConfig


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_three_names(server: Server, loopback: str, transport: str) -> None:
    async with AsyncClient(loopback, server.port, transport=transport) as client:  # type: ignore[arg-type]
        replies = [await client.request(name) for name in (b"Michael", b"Tracy", b"Sarah")]
    assert replies == [b"Hello, Michael!", b"Hello, Tracy!", b"Hello, Sarah!"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_many_concurrent_requests_are_matched(server: Server, loopback: str,
                                                    transport: str) -> None:
    async with AsyncClient(loopback, server.port, transport=transport) as client:  # type: ignore[arg-type]
        names = [b"n%d" % i for i in range(300)]
        replies = await asyncio.gather(*(client.request(name) for name in names))
        stats = client.stats()
    assert replies == [b"Hello, " + name + b"!" for name in names]
    assert stats.answered == 300


async def test_closed_udp_port_is_refused_at_once(closed_udp_port: int) -> None:
    async with AsyncClient("127.0.0.1", closed_udp_port, timeout=30) as client:
        with pytest.raises(RequestRefused) as caught:
            await client.request(b"x")
    assert caught.value.attempts == 1
    assert caught.value.elapsed < 30  # not the deadline: refused is reported at once
    assert "refused" in str(caught.value)


async def test_closed_tcp_port_is_refused(closed_udp_port: int) -> None:
    async with AsyncClient("127.0.0.1", closed_udp_port, transport="tcp", timeout=30) as client:
        with pytest.raises(RequestRefused):
            await client.request(b"x")


class FakeUdpServer(asyncio.DatagramProtocol):
    """Loses the first ``answer_after`` requests; then answers junk and (optionally)
    the right reply twice.  ``junk_only``: answers every request with junk alone."""

    def __init__(self, *, answer_after: int = 0, reply: bool = True,
                 junk_only: bool = False) -> None:
        self.answer_after = answer_after
        self.reply = reply
        self.junk_only = junk_only
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        assert self.transport is not None
        if self.junk_only:
            self.transport.sendto(b"junk", addr)
            return
        if self.reply and len(self.seen) > self.answer_after:
            self.transport.sendto(b"junk", addr)
            self.transport.sendto(b"Hello, " + data + b"!", addr)
            self.transport.sendto(b"Hello, " + data + b"!", addr)


@pytest.fixture
async def fake(loopback: str) -> AsyncIterator[tuple[FakeUdpServer, int]]:
    loop = asyncio.get_running_loop()
    protocol = FakeUdpServer(answer_after=2)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol,
                                                       local_addr=(loopback, 0))
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


async def test_lost_requests_are_retried_and_junk_is_ignored(
    fake: tuple[FakeUdpServer, int], loopback: str
) -> None:
    protocol, port = fake
    policy = RetryPolicy(timeout=3.0, retries=4, first_wait=0.05, jitter=0)
    async with AsyncClient(loopback, port, policy=policy) as client:
        answer = await client.exchange(b"Sarah")
        await asyncio.sleep(0.05)
        stats = client.stats()
    assert answer.reply == b"Hello, Sarah!"
    assert answer.attempts == 3  # the fake ignores the first two
    assert protocol.seen == [b"Sarah"] * 3
    assert stats.unexpected == 1  # the junk sent with the right reply is skipped
    assert stats.duplicates == 1  # the fake answers twice
    assert stats.retransmissions == 2


async def test_timeout_says_where_how_often_and_how_long(loopback: str) -> None:
    loop = asyncio.get_running_loop()
    protocol = FakeUdpServer(reply=False)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol,
                                                       local_addr=(loopback, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with AsyncClient(loopback, port, timeout=0.3, retries=2) as client:
            with pytest.raises(RequestTimeout) as caught:
                await client.request(b"x")
    finally:
        transport.close()
    error = caught.value
    assert error.attempts == 3
    assert error.elapsed >= 0.3
    assert str(port) in error.address
    assert str(error).startswith("timeout:")
    assert len(protocol.seen) == 3


async def test_a_server_answering_only_junk_is_a_protocol_error_after_one_attempt(
    loopback: str,
) -> None:
    """Regression: a UDP reply that does not match ``expect`` was retried until the
    deadline and reported as ``timeout: no reply``, though the server answered each
    time (TCP said ``protocol``).  Now the attempt that got only a non-matching
    reply ends the request as ``protocol``, naming the reply."""
    loop = asyncio.get_running_loop()
    protocol = FakeUdpServer(junk_only=True)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol,
                                                       local_addr=(loopback, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with AsyncClient(loopback, port, timeout=3.0, retries=3) as client:
            with pytest.raises(UnexpectedReply) as caught:
                await client.request(b"x")
            stats = client.stats()
    finally:
        transport.close()
    assert caught.value.attempts == 1
    assert str(caught.value).startswith("protocol: reply b'junk' does not match")
    assert (stats.unexpected, stats.timeouts, stats.retransmissions) == (1, 0, 0)
    assert protocol.seen == [b"x"]


async def test_reply_from_another_address_is_not_accepted(loopback: str) -> None:
    """The client socket is connected; a reply sent from another port never counts."""
    loop = asyncio.get_running_loop()
    other = socket.socket(family_of(loopback), socket.SOCK_DGRAM)
    other.bind((loopback, 0))
    received: list[tuple[bytes, tuple[str, int]]] = []

    class Liar(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append((data, addr))
            other.sendto(b"Hello, " + data + b"!", addr)  # the right bytes, wrong source

    transport, _ = await loop.create_datagram_endpoint(Liar, local_addr=(loopback, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with AsyncClient(loopback, port, timeout=0.3, retries=0) as client:
            with pytest.raises(RequestTimeout):
                await client.request(b"x")
    finally:
        transport.close()
        other.close()
    assert len(received) == 1


async def test_tcp_reconnects_after_the_server_drops_the_connection(loopback: str) -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(b"Welcome!\n")
        line = await reader.readline()
        if connections == 1:
            writer.close()  # drop the first request on the floor
            return
        writer.write(b"Hello, " + line.rstrip(b"\n") + b"!\n")
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(handle, loopback, 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        async with AsyncClient(loopback, port, transport="tcp", timeout=3) as client:
            answer = await client.exchange(b"again")
    finally:
        tcp.close()
        await tcp.wait_closed()
    assert answer.reply == b"Hello, again!"
    assert answer.attempts == 2


async def test_tcp_connection_lost_every_time_is_reported_as_closed(loopback: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Welcome!\n")
        await reader.readline()
        writer.close()

    tcp = await asyncio.start_server(handle, loopback, 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        async with AsyncClient(loopback, port, transport="tcp", timeout=3, retries=2) as client:
            with pytest.raises(ConnectionClosed) as caught:
                await client.request(b"x")
    finally:
        tcp.close()
        await tcp.wait_closed()
    assert caught.value.attempts == 3


async def test_tcp_error_line_and_wrong_reply_are_unexpected(loopback: str) -> None:
    def handler(request: bytes, peer: object) -> bytes:
        if request == b"boom":
            raise RuntimeError
        return b"something else"

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server, \
            AsyncClient(loopback, server.port, transport="tcp") as client:
        with pytest.raises(UnexpectedReply, match="handler failed"):
            await client.request(b"boom")
        with pytest.raises(UnexpectedReply, match="does not match"):
            await client.request(b"x")


async def test_tcp_line_payload_cannot_hold_a_newline(server: Server, loopback: str) -> None:
    async with AsyncClient(loopback, server.port, transport="tcp") as client:
        with pytest.raises(LocalProtocolError):
            await client.request(b"a\nb")
        with pytest.raises(LocalProtocolError):
            await client.request(b"exit")


async def test_tcp_raw_framing_against_a_raw_server(loopback: str) -> None:
    async with Server(ServerConfig(host=loopback, port=0, tcp_framing="raw")) as server, \
            AsyncClient(loopback, server.port, transport="tcp", framing="raw") as client:
        assert await client.request(b"Michael") == b"Hello, Michael!"
        assert await client.request(b"Tracy") == b"Hello, Tracy!"


async def test_echo_and_custom_matchers(loopback: str) -> None:
    async with Server(ServerConfig(app="echo", host=loopback, port=0)) as server:
        async with AsyncClient(loopback, server.port, matcher="echo") as client:
            assert await client.request(b"same") == b"same"
        async with AsyncClient(loopback, server.port,
                               matcher=lambda req, rep: rep == req) as client:
            assert await client.request(b"pred") == b"pred"


async def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        AsyncClient(transport="sctp")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot resolve"):
        async with AsyncClient("no-such-host.invalid", 9):
            pass
    with pytest.raises(ValueError, match="must be"):
        AsyncClient(matcher="smtp")  # not an app: "dns" is one now


def test_blocking_client_in_a_thread_free_of_event_loops(loopback: str) -> None:
    async def run_server(ready: asyncio.Future[int], stop: asyncio.Event) -> None:
        async with Server(ServerConfig(host=loopback, port=0)) as server:
            ready.set_result(server.port)
            await stop.wait()

    import threading

    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(run_server(ready, stop),))
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), 5),
                                                loop).result(5)
        with Client(loopback, port) as client:
            assert client.request(b"Michael") == b"Hello, Michael!"
            assert client.exchange(b"Tracy").attempts == 1
            assert client.stats().answered == 2
            assert client.address is not None
        with Client(loopback, port, transport="tcp") as client:
            assert client.request(b"Sarah") == b"Hello, Sarah!"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
