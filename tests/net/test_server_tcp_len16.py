"""Tier (c): len16 TCP framing on real loopback sockets, on every TCP path.

Each test runs on the C poller, the C line reader and the pure path (the
``tcp_path`` fixture; ``make test`` runs this file again with
``UDPKIT_NO_FASTPATH=1``): each message and reply after its length in two
bytes, network order (RFC 1035 section 4.2.2, RFC 7766 section 8); no
welcome, no ``exit``; an empty message or a length over the limit is
answered, counted, and closes the connection.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.handlers import outcome_handler
from tests.net.helpers import expect_fast, flood_unread_then_drain, wait_for_counters
from udpkit import AsyncClient, Client
from udpkit.core.errors import LocalProtocolError
from udpkit.core.handler import Peer, Reply
from udpkit.server import Server, ServerConfig

pytestmark = pytest.mark.usefixtures("tcp_path")


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(3):
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(3):
        return await reader.read()


def len16_config(host: str = "127.0.0.1", **options: object) -> ServerConfig:
    return ServerConfig(host=host, port=0, udp=False, tcp_framing="len16", **options)  # type: ignore[arg-type]


async def test_pipelined_messages_whole_and_byte_by_byte_are_answered_in_order(
    tcp_path: str, loopback: str
) -> None:
    """No welcome: the first bytes the client reads are its first reply's prefix.
    Messages may hold any byte (``\\n`` too) and ``exit`` is a message like any."""
    async with Server(len16_config(loopback)) as server:
        reader, writer = await connect(loopback, server.port)
        writer.write(framed(b"Michael", b"a\nb", b"exit"))
        assert [await read_message(reader) for _ in range(3)] == [
            b"Hello, Michael!", b"Hello, a\nb!", b"Hello, exit!"]
        for byte in framed(b"Tracy", b"Sarah"):  # a prefix and a message over many segments
            writer.write(bytes([byte]))
            await writer.drain()
        assert [await read_message(reader) for _ in range(2)] == [
            b"Hello, Tracy!", b"Hello, Sarah!"]
        (connection,) = server.connections
        assert (connection.reader is not None) is expect_fast(tcp_path)
        assert connection.polled is (expect_fast(tcp_path) and tcp_path == "fast")
        writer.write_eof()
        assert await read_to_eof(reader) == b""  # answered all, then closed
        writer.close()
        stats = await wait_for_counters(server, "tcp", 5)
    assert (stats.received, stats.replied) == (5, 5)


async def test_every_outcome_in_one_segment_is_answered_in_order_and_counted() -> None:
    """Reply, None, raise, bytes-like, wrong type, async, a reply too long for the
    prefix, then an empty message: answered, counted, and the connection closes
    without reading what follows it."""

    async with Server(len16_config(app=outcome_handler)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        writer.write(framed(b"a", b"none", b"raise", b"array", b"wrong", b"later", b"b",
                            b"huge", b"max", b"c", b"", b"never"))
        replies = [await read_message(reader) for _ in range(10)]
        assert await read_to_eof(reader) == b""
        writer.close()
        stats = await wait_for_counters(server, "tcp", 11)
    assert replies == [
        b"ok a", b"error: handler failed", b"from array", b"error: handler failed",
        b"was later", b"ok b", b"error: handler failed", b"m" * 65535, b"ok c",
        b"error: empty request",
    ]
    assert (stats.received, stats.replied, stats.no_reply, stats.handler_errors,
            stats.dropped_empty) == (11, 6, 1, 3, 1)


async def test_an_empty_message_is_answered_counted_and_closes(loopback: str) -> None:
    async with Server(len16_config(loopback)) as server:
        reader, writer = await connect(loopback, server.port)
        writer.write(framed(b"a", b"", b"b"))
        assert await read_message(reader) == b"Hello, a!"
        assert await read_message(reader) == b"error: empty request"
        assert await read_to_eof(reader) == b""
        writer.close()
        stats = await wait_for_counters(server, "tcp", 2)
    assert (stats.received, stats.replied, stats.dropped_empty) == (2, 1, 1)


async def test_a_length_over_the_limit_is_answered_counted_and_closes_at_once() -> None:
    """The prefix alone decides: the client need not send the bytes it announced."""
    async with Server(len16_config(max_request=10)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        writer.write(framed(b"ok", b"x" * 10) + (11).to_bytes(2, "big"))
        assert [await read_message(reader) for _ in range(3)] == [
            b"Hello, ok!", b"Hello, xxxxxxxxxx!", b"error: request too long"]
        assert await read_to_eof(reader) == b""
        writer.close()
        stats = await wait_for_counters(server, "tcp", 3)
    assert (stats.received, stats.replied, stats.dropped_oversize) == (3, 2, 1)


async def test_the_largest_request_crosses_segments(tcp_path: str) -> None:
    async with Server(len16_config(max_request=65507)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        big = bytes(range(256)) * 255 + b"z" * 227  # 65507 bytes
        writer.write(framed(big, b"after"))
        assert await read_message(reader) == b"Hello, " + big + b"!"
        assert await read_message(reader) == b"Hello, after!"
        writer.close()


async def test_a_partial_message_at_eof_is_not_a_request() -> None:
    """The client stops inside a message: what it sent whole is answered, then the
    connection closes; the unfinished one is not counted (as a partial line)."""
    async with Server(len16_config()) as server:
        for tail in (b"\x00", b"\x00\x05Tra"):
            reader, writer = await connect("127.0.0.1", server.port)
            writer.write(framed(b"Michael") + tail)
            writer.write_eof()
            assert await read_message(reader) == b"Hello, Michael!"
            assert await read_to_eof(reader) == b""
            writer.close()
        stats = await wait_for_counters(server, "tcp", 2)
    assert (stats.received, stats.replied) == (2, 2)


async def test_a_slowloris_on_the_length_prefix_is_closed_as_slow() -> None:
    """One byte of a prefix, then nothing: the line timeout runs from that byte."""
    async with Server(len16_config(tcp_line_timeout=0.2, tcp_idle_timeout=30)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        writer.write(framed(b"a") + b"\x00")
        assert await read_to_eof(reader) == framed(b"Hello, a!")  # closed by the server
        writer.close()
        stats = await wait_for_counters(server, "tcp", 1)
    assert (stats.replied, stats.closed_slow, stats.closed_idle) == (1, 1, 0)


async def test_async_replies_keep_request_order_under_the_pipeline_limit() -> None:
    """Replies go out in request order (the server's design: one ordered queue per
    connection), however long each async handler takes; beyond ``tcp_pipeline``
    pending replies reading pauses, and every request is still answered."""

    async def handler(request: bytes, peer: Peer) -> Reply:
        await asyncio.sleep(0.001 * (int(request) % 5))
        return b"r" + request

    async with Server(len16_config(app=handler, tcp_pipeline=4)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        writer.write(framed(*(b"%d" % i for i in range(50))))
        assert [await read_message(reader) for _ in range(50)] == [
            b"r%d" % i for i in range(50)]
        writer.close()
        stats = await wait_for_counters(server, "tcp", 50)
    assert stats.replied == 50


# -- the client library, over the same framing ------------------------------------------


async def test_the_client_pipelines_len16_requests_without_welcome_or_exit(
    tcp_path: str, loopback: str
) -> None:
    """Concurrent requests on one connection, matched in order; ``exit`` and a line
    break are ordinary payloads; a payload longer than a prefix can say is refused
    before anything is sent; closing sends nothing (no ``exit``)."""
    async with Server(len16_config(loopback, max_request=65507)) as server:
        async with AsyncClient(loopback, server.port, transport="tcp", framing="len16",
                               timeout=3) as client:
            names = [b"exit", b"a\nb", *(b"n%d" % i for i in range(20))]
            replies = await asyncio.gather(*(client.request(name) for name in names))
            assert replies == [b"Hello, " + name + b"!" for name in names]
            with pytest.raises(LocalProtocolError, match="at most 65535 bytes"):
                await client.request(b"x" * 65536)
            assert (await client.exchange(b"y" * 65507)).reply == b"Hello, " + b"y" * 65507 + b"!"
        stats = await wait_for_counters(server, "tcp", 23)
    assert (stats.received, stats.replied, stats.connections_opened) == (23, 23, 1)


async def test_the_blocking_client_speaks_len16() -> None:
    async with Server(len16_config()) as server:
        def call() -> bytes:
            with Client("127.0.0.1", server.port, transport="tcp", framing="len16") as client:
                return client.request(b"Michael")

        assert await asyncio.to_thread(call) == b"Hello, Michael!"


# -- limits: the rate, the caps, a client that does not read ------------------------------


async def test_the_rate_limit_holds_exactly_on_every_path(tcp_path: str) -> None:
    """As with lines: the burst is served, the first message over it answered
    ``error: rate limited``, then the connection waits for tokens; the messages held
    meanwhile go back framed as they came and are served or refused in order."""
    config = len16_config(rate_limit=1, rate_burst=20, limit_exempt=())
    async with Server(config) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        writer.write(framed(*(b"n%d" % i for i in range(100))))
        replies = [await read_message(reader) for _ in range(21)]
        (connection,) = server.connections
        assert (connection.reader is not None) is expect_fast(tcp_path)
        paused = server.stats()["tcp"]
        with pytest.raises(TimeoutError):  # the pause: no reply a message
            await asyncio.wait_for(read_message(reader), 0.3)
        after = [await read_message(reader) for _ in range(2)]
        writer.close()
    assert replies == [b"Hello, n%d!" % i for i in range(20)] + [b"error: rate limited"]
    assert (paused.received, paused.replied, paused.dropped_rate_limited) == (21, 20, 1)
    assert after == [b"Hello, n21!", b"error: rate limited"]


async def test_over_the_connection_cap_busy_is_framed() -> None:
    async with Server(len16_config(tcp_max_connections=1)) as server:
        reader, writer = await connect("127.0.0.1", server.port)
        assert await exchange_one(reader, writer, b"a") == b"Hello, a!"
        busy_reader, busy_writer = await connect("127.0.0.1", server.port)
        assert await read_to_eof(busy_reader) == framed(b"busy")
        busy_writer.close()
        writer.close()


async def exchange_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       message: bytes) -> bytes:
    writer.write(framed(message))
    return await read_message(reader)


BIG_REPLY = b"r" * 60_000


def big_reply(request: bytes, peer: object) -> bytes:
    return BIG_REPLY


async def test_replies_thrown_away_at_an_abort_are_send_errors_not_replied(
    tcp_path: str,
) -> None:
    """``replied`` means handed to the kernel with len16 too: a client that never reads
    is aborted at the write timeout, and every reply counted it can still read
    afterwards (the poller says where its unsent replies' first whole message starts,
    so the ledger walks them by prefix)."""
    config = len16_config(app=big_reply, tcp_write_timeout=0.3)
    async with Server(config) as server:  # 12 MB of replies, never read
        received, stats = await flood_unread_then_drain(server, framed(b"x") * 200)
    whole = len(received) // (2 + len(BIG_REPLY))  # the last one may be cut
    assert bytes(received[: whole * (2 + len(BIG_REPLY))]) == framed(BIG_REPLY) * whole
    assert stats.received == 200
    assert stats.replied + stats.send_errors == 200
    assert stats.send_errors > 0  # the abort threw replies away
    assert stats.replied == whole
