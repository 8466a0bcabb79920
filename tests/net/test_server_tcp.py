"""Tier (c): the TCP side of the server on real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from tests.handlers import outcome_handler
from tests.net.helpers import expect_fast, wait_for_counters
from udpkit.core.handler import Peer, Reply
from udpkit.server import Server, ServerConfig

pytestmark = pytest.mark.usefixtures("tcp_path")


async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(3):
        return await reader.readline()


async def test_welcome_lines_and_exit(server: Server, loopback: str) -> None:
    reader, writer = await connect(loopback, server.port)
    assert await read_line(reader) == b"Welcome!\n"
    for name in (b"Michael", b"Tracy", b"Sarah"):
        writer.write(name + b"\n")
        assert await read_line(reader) == b"Hello, " + name + b"!\n"
    writer.write(b"exit\n")
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # the server closed
    writer.close()


async def test_pipelined_lines_in_one_segment_and_split_across_segments(
    server: Server, loopback: str
) -> None:
    reader, writer = await connect(loopback, server.port)
    await read_line(reader)
    writer.write(b"a\nb\r\nc\nd")
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(b"ef\n")
    replies = [await read_line(reader) for _ in range(4)]
    assert replies == [b"Hello, a!\n", b"Hello, b!\n", b"Hello, c!\n", b"Hello, def!\n"]
    writer.close()


async def test_line_over_the_limit_gets_an_error_then_close(loopback: str) -> None:
    async with Server(ServerConfig(host=loopback, port=0, max_request=10)) as server:
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"ok\n" + b"x" * 11 + b"\n")
        assert await read_line(reader) == b"Hello, ok!\n"
        assert await read_line(reader) == b"error: request too long\n"
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        stats = await wait_for_counters(server, "tcp", 2)
        assert (stats.replied, stats.dropped_oversize) == (1, 1)


async def test_empty_line_gets_an_error_and_the_connection_stays_usable(
    server: Server, loopback: str
) -> None:
    reader, writer = await connect(loopback, server.port)
    await read_line(reader)
    writer.write(b"\nafter\n")
    assert await read_line(reader) == b"error: empty request\n"
    assert await read_line(reader) == b"Hello, after!\n"
    writer.close()


async def test_handler_error_gives_an_error_line_and_the_connection_stays_usable(
    loopback: str,
) -> None:
    def handler(request: bytes, peer: Peer) -> bytes:
        if request == b"boom":
            raise RuntimeError("boom")
        return b"ok " + request

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"boom\nfine\n")
        assert await read_line(reader) == b"error: handler failed\n"
        assert await read_line(reader) == b"ok fine\n"
        writer.close()
        stats = await wait_for_counters(server, "tcp", 2)
        assert (stats.handler_errors, stats.replied) == (1, 1)


async def test_async_replies_keep_request_order(loopback: str) -> None:
    async def handler(request: bytes, peer: Peer) -> bytes | None:
        assert peer.transport == "tcp"
        await asyncio.sleep(0.05 if request == b"slow" else 0)
        return None if request == b"none" else request

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"slow\nnone\nfast\nexit\n")
        assert await read_line(reader) == b"slow\n"
        assert await read_line(reader) == b"fast\n"
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        stats = await wait_for_counters(server, "tcp", 3)
        assert (stats.replied, stats.no_reply) == (2, 1)


async def test_mixed_sync_and_async_replies_keep_order(loopback: str) -> None:
    def handler(request: bytes, peer: Peer) -> object:
        if request.startswith(b"a"):
            async def later() -> bytes:
                await asyncio.sleep(0.02)
                return request
            return later()
        return request

    async with Server(ServerConfig(app=handler, host=loopback, port=0)) as server:  # type: ignore[arg-type]
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"a1\ns2\na3\ns4\n")
        assert [await read_line(reader) for _ in range(4)] == [b"a1\n", b"s2\n", b"a3\n", b"s4\n"]
        writer.close()


async def test_raw_framing_is_the_tutorials_lock_step(loopback: str) -> None:
    async with Server(ServerConfig(host=loopback, port=0, tcp_framing="raw")) as server:
        reader, writer = await connect(loopback, server.port)
        async with asyncio.timeout(3):
            assert await reader.read(1024) == b"Welcome!"
            for name in (b"Michael", b"Tracy"):
                writer.write(name)
                assert await reader.read(1024) == b"Hello, " + name + b"!"
            writer.write(b"exit")
            assert await reader.read() == b""
        writer.close()


async def test_silent_client_does_not_delay_others(server: Server, loopback: str) -> None:
    _, silent_writer = await connect(loopback, server.port)
    silent_writer.write(b"half a li")  # never finishes its line
    reader, writer = await connect(loopback, server.port)
    await read_line(reader)
    writer.write(b"me\n")
    assert await read_line(reader) == b"Hello, me!\n"
    writer.close()
    silent_writer.close()


async def test_client_that_never_reads_is_paused_not_buffered_without_bound(loopback: str) -> None:
    """A peer that pipelines without reading its replies pauses its own reading."""
    async with Server(ServerConfig(host=loopback, port=0)) as server:
        sock = socket.create_connection((loopback, server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        stream = (b"x" * 1000 + b"\n") * 20000  # 20 MB of requests, replies never read
        sent = 0
        stalls = 0
        while sent < len(stream) and stalls < 20:
            try:
                sent += sock.send(stream[sent : sent + 65536])
                stalls = 0
            except BlockingIOError:
                stalls += 1
                await asyncio.sleep(0.01)
        # The server stopped reading: our send buffer filled long before 20 MB went out.
        assert sent < len(stream)
        assert server.open_connections == 1  # paused, not dropped
        # ...and another client is still served.
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"other\n")
        assert await read_line(reader) == b"Hello, other!\n"
        writer.close()
        sock.close()


async def test_reset_mid_line_is_cleaned_up(server: Server, loopback: str) -> None:
    reader, writer = await connect(loopback, server.port)
    assert await read_line(reader) == b"Welcome!\n"  # accepted
    writer.write(b"half")
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # closes with linger 0: an RST
    async with asyncio.timeout(3):
        while server.open_connections or not server.stats()["tcp"].connections_closed:
            await asyncio.sleep(0.01)
    stats = server.stats()["tcp"]
    assert stats.connections_opened == stats.connections_closed == 1


async def test_eof_after_requests_still_gets_the_replies(server: Server, loopback: str) -> None:
    reader, writer = await connect(loopback, server.port)
    writer.write(b"a\nb\n")
    writer.write_eof()
    async with asyncio.timeout(3):
        assert await reader.read() == b"Welcome!\nHello, a!\nHello, b!\n"
    writer.close()


@pytest.mark.parametrize("count", [20])
async def test_many_concurrent_connections(server: Server, loopback: str, count: int) -> None:
    async def one(index: int) -> bytes:
        reader, writer = await connect(loopback, server.port)
        await read_line(reader)
        writer.write(b"n%d\n" % index)
        reply = await read_line(reader)
        writer.close()
        return reply

    replies = await asyncio.gather(*(one(i) for i in range(count)))
    assert replies == [b"Hello, n%d!\n" % i for i in range(count)]


async def test_the_path_asked_for_serves_and_is_announced(
    tcp_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="udpkit")
    async with Server(ServerConfig(host="127.0.0.1", port=0, udp=False)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        await read_line(reader)
        writer.write(b"x\n")
        assert await read_line(reader) == b"Hello, x!\n"
        (connection,) = server.connections
        assert (connection.reader is not None) is expect_fast(tcp_path)
        polled = expect_fast(tcp_path) and tcp_path == "fast"
        assert connection.polled is polled
        writer.close()
    announced = [r.getMessage() for r in caplog.records if "TCP fast path" in r.getMessage()]
    if polled:
        assert announced == [
            "TCP fast path: connections read from one epoll set, lines split in C (C extension)"
        ]
    elif expect_fast(tcp_path):
        assert announced == ["TCP fast path: line splitting in C (C extension)"]
    else:
        assert announced == ["TCP fast path unavailable (UDPKIT_NO_FASTPATH is set): pure Python"]


async def test_every_outcome_in_one_segment_is_answered_and_counted_exactly(
    tcp_path: str,
) -> None:
    """Reply, None, raise, empty, bytes-like, wrong type, async, then more sync lines and a
    line over the limit, all in one segment: the fast path hands the unusual ones to
    Python at their line and the replies keep request order."""

    config = ServerConfig(app=outcome_handler, host="127.0.0.1", port=0, udp=False, max_request=20)  # type: ignore[arg-type]
    async with Server(config) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        await read_line(reader)
        writer.write(b"a\r\nnone\nraise\n\narray\nwrong\nb\nlater\nc\n" + b"x" * 21 + b"\nd\n")
        async with asyncio.timeout(3):
            lines = (await reader.read()).splitlines()
        writer.close()
        stats = await wait_for_counters(server, "tcp", 10)
    assert lines == [
        b"ok a", b"error: handler failed", b"error: empty request", b"from array",
        b"error: handler failed", b"ok b", b"was later", b"ok c", b"error: request too long",
    ]
    assert (stats.received, stats.replied, stats.no_reply, stats.handler_errors,
            stats.dropped_empty, stats.dropped_oversize) == (10, 5, 1, 2, 1, 1)


async def test_latency_is_observed_once_per_reply_queued_behind_async_ones_too() -> None:
    """Sync replies that wait behind an async one are written later, from the queue;
    they are replies all the same and their latency counts (until they are written)."""

    async def later(request: bytes) -> Reply:
        await asyncio.sleep(0.05)
        return b"later " + request

    def handler(request: bytes, peer: Peer) -> object:
        return later(request) if request == b"slow" else b"now " + request

    config = ServerConfig(app=handler, host="127.0.0.1", port=0, udp=False,  # type: ignore[arg-type]
                          metrics=("127.0.0.1", 0))
    async with Server(config) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        await read_line(reader)
        writer.write(b"a\nslow\nb\nc\n")
        assert [await read_line(reader) for _ in range(4)] == [
            b"now a\n", b"later slow\n", b"now b\n", b"now c\n"]
        writer.close()
        stats = await wait_for_counters(server, "tcp", 4)
        assert server.latency is not None
        assert (stats.replied, sum(server.latency.counts)) == (4, 4)
        assert server.latency.total >= 3 * 0.045  # slow, and b and c that waited behind it


async def test_latency_is_observed_once_per_reply() -> None:
    config = ServerConfig(host="127.0.0.1", port=0, udp=False, metrics=("127.0.0.1", 0))
    async with Server(config) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        await read_line(reader)
        writer.write(b"a\nb\n\nc\n")
        assert [await read_line(reader) for _ in range(4)][-1] == b"Hello, c!\n"
        writer.close()
        stats = await wait_for_counters(server, "tcp", 4)
        assert server.latency is not None
        assert (stats.replied, sum(server.latency.counts)) == (3, 3)


async def test_exit_in_the_middle_of_a_segment_answers_the_lines_before_it(
    server: Server, loopback: str
) -> None:
    reader, writer = await connect(loopback, server.port)
    await read_line(reader)
    writer.write(b"a\nb\nexit\r\nc\n")
    async with asyncio.timeout(3):
        assert await reader.read() == b"Hello, a!\nHello, b!\n"
    writer.close()
    stats = await wait_for_counters(server, "tcp", 2)
    assert (stats.received, stats.replied) == (2, 2)
