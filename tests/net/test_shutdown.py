"""Tier (c): graceful shutdown answers what was received, then closes."""

from __future__ import annotations

import asyncio

import pytest

from tests.net.helpers import RawUdp
from udpkit.core.handler import Peer
from udpkit.server import Server, ServerConfig

# Every test here runs on the C fast path and on the pure-Python path.
pytestmark = pytest.mark.usefixtures("udp_path")


async def test_pending_async_requests_are_answered_before_close() -> None:
    started = asyncio.Event()

    async def handler(request: bytes, peer: Peer) -> bytes:
        started.set()
        await asyncio.sleep(0.1)
        return b"done " + request

    server = Server(ServerConfig(app=handler, port=0))
    await server.startup()
    raw = RawUdp("127.0.0.1")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await reader.readline()
        writer.write(b"tcp\n")
        await raw.send(b"udp", ("127.0.0.1", server.port))
        await started.wait()
        await asyncio.sleep(0.01)
        await server.shutdown()  # while both handlers are still sleeping
        assert await raw.recv(timeout=1) == b"done udp"
        async with asyncio.timeout(2):
            assert await reader.read() == b"done tcp\n"  # answered, then closed
    finally:
        raw.close()
        writer.close()
    stats = server.stats()
    assert stats["udp"].replied == 1
    assert stats["tcp"].replied == 1
    assert stats["tcp"].connections_closed == 1


async def test_datagrams_queued_in_the_kernel_are_answered_on_shutdown() -> None:
    server = Server(ServerConfig(port=0))
    await server.startup()
    raw = RawUdp("127.0.0.1")
    try:
        # Sent without yielding to the loop: they sit in the kernel's queue.
        for index in range(20):
            raw.sock.sendto(b"q%d" % index, ("127.0.0.1", server.port))
        await server.shutdown()
        replies = {await raw.recv(timeout=1) for _ in range(20)}
    finally:
        raw.close()
    assert replies == {b"Hello, q%d!" % index for index in range(20)}
    assert server.stats()["udp"].replied == 20


async def test_graceful_timeout_bounds_a_stuck_handler() -> None:
    async def handler(request: bytes, peer: Peer) -> bytes:
        await asyncio.sleep(60)
        return request

    server = Server(ServerConfig(app=handler, port=0, graceful_timeout=0.2))
    await server.startup()
    raw = RawUdp("127.0.0.1")
    try:
        await raw.send(b"stuck", ("127.0.0.1", server.port))
        await asyncio.sleep(0.05)
        async with asyncio.timeout(3):
            await server.shutdown()
    finally:
        raw.close()
    stats = server.stats()["udp"]
    assert stats.received == stats.accounted == 1
    assert stats.handler_errors == 1  # cancelled at the deadline, counted


async def test_force_exit_skips_the_wait() -> None:
    """A second signal does not wait out ``graceful_timeout`` (30 s here): the
    stuck handler is cancelled at once, counted, and its request gets no reply."""
    cancelled = asyncio.Event()

    async def handler(request: bytes, peer: Peer) -> bytes:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return request

    server = Server(ServerConfig(app=handler, port=0, graceful_timeout=30))
    await server.startup()
    raw = RawUdp("127.0.0.1")
    try:
        await raw.send(b"stuck", ("127.0.0.1", server.port))
        await wait_for_counters_received(server, 1)
        asyncio.get_running_loop().call_later(0.1, server.force_exit)
        async with asyncio.timeout(3):  # far below the 30 s it would otherwise wait
            await server.shutdown()
        assert await raw.recv(timeout=0.2) is None
    finally:
        raw.close()
    assert cancelled.is_set()
    stats = server.stats()["udp"]
    assert stats.received == stats.accounted == 1
    assert (stats.replied, stats.handler_errors) == (0, 1)


async def wait_for_counters_received(server: Server, received: int) -> None:
    """Until the server has read ``received`` datagrams (their handlers may still run)."""
    async with asyncio.timeout(3):
        while server.stats()["udp"].received < received:
            await asyncio.sleep(0.005)


async def test_summary_line_names_every_counter() -> None:
    async with Server(ServerConfig(port=0)) as server:
        summary = server.summary()
    assert summary.startswith("Summary: UDP received=0 replied=0")
    assert "dropped(empty=0 oversize=0 truncated=0 denied=0 rate_limited=0 " in summary
    assert "TCP received=0" in summary
