"""Handlers that misbehave must not take the server, or its log, down with them.

In-process servers on loopback, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.net.helpers import RawUdp, wait_for_counters
from udpkit.core.handler import Peer
from udpkit.server import Server, ServerConfig
from udpkit.server.dispatch import AsyncCalls

HOST = "127.0.0.1"


def always_raises(request: bytes, peer: Peer) -> bytes:
    raise RuntimeError("broken handler")


@pytest.mark.usefixtures("udp_path")
async def test_handler_tracebacks_are_rate_limited_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 16, item 6): a handler that always raised logged a traceback
    per request, 6.4 MB of log in 5 s; abuse lines were limited, handler errors not."""
    caplog.set_level(logging.ERROR, logger="udpkit")
    started = time.monotonic()
    async with Server(ServerConfig(port=0, app=always_raises)) as server:
        raw = RawUdp(HOST)
        try:
            for batch in range(10):  # paced, so the kernel's queue never overflows
                for index in range(30):
                    raw.sock.sendto(b"r%d" % index, (HOST, server.port))
                stats = await wait_for_counters(server, "udp", 30 * (batch + 1))
        finally:
            raw.close()
    elapsed = time.monotonic() - started
    assert stats.handler_errors == 300
    logged = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(logged) <= 5 + elapsed + 1  # the burst, then about one a second
    assert sum(r.exc_info is not None for r in logged) == len(logged)


async def tcp_exchange(port: int, lines: bytes, replies: int) -> list[bytes]:
    """Send ``lines`` on one connection; the welcome, then ``replies`` reply lines."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(lines)
        async with asyncio.timeout(10):
            return [await reader.readline() for _ in range(replies + 1)][1:]
    finally:
        writer.close()


def raises_base_exceptions(request: bytes, peer: Peer) -> bytes:
    if request == b"exit-please":
        raise SystemExit(7)
    if request == b"interrupt":
        raise KeyboardInterrupt
    return b"Hello, " + request + b"!"


@pytest.mark.usefixtures("udp_path")
async def test_systemexit_and_keyboardinterrupt_from_a_handler_are_handler_errors_udp() -> None:
    """Regression (issue 16, item 7): over UDP the server exited (rc 7, or 1 with
    "Aborted!") and the request had no outcome."""
    async with Server(ServerConfig(port=0, app=raises_base_exceptions, tcp=False)) as server:
        raw = RawUdp(HOST)
        try:
            for payload in (b"exit-please", b"interrupt", b"Sarah"):
                await raw.send(payload, (HOST, server.port))
            assert await raw.recv() == b"Hello, Sarah!"
            stats = await wait_for_counters(server, "udp", 3)
        finally:
            raw.close()
    assert (stats.handler_errors, stats.replied) == (2, 1)


@pytest.mark.usefixtures("tcp_path")
async def test_systemexit_and_keyboardinterrupt_from_a_handler_are_handler_errors_tcp() -> None:
    """Regression (issue 16, item 7): over TCP such a request was never counted."""
    async with Server(ServerConfig(port=0, app=raises_base_exceptions, udp=False)) as server:
        replies = await tcp_exchange(server.port, b"exit-please\ninterrupt\nSarah\n", 3)
        stats = await wait_for_counters(server, "tcp", 3)
    assert replies == [b"error: handler failed\n"] * 2 + [b"Hello, Sarah!\n"]
    assert (stats.handler_errors, stats.replied) == (2, 1)


async def cancels_itself(request: bytes, peer: Peer) -> bytes:
    if request == b"cancel":
        raise asyncio.CancelledError
    return b"Hello, " + request + b"!"


@pytest.mark.usefixtures("tcp_path")
async def test_an_async_handler_raising_cancelled_error_does_not_wedge_tcp() -> None:
    """Regression (issue 16, item 3): the reply writer died with the handler's
    CancelledError, and the connection's later lines were never answered."""
    async with Server(ServerConfig(port=0, app=cancels_itself, udp=False)) as server:
        replies = await tcp_exchange(server.port, b"cancel\nTracy\ncancel\nSarah\n", 4)
        stats = await wait_for_counters(server, "tcp", 4)
    assert replies == [b"error: handler failed\n", b"Hello, Tracy!\n",
                       b"error: handler failed\n", b"Hello, Sarah!\n"]
    assert (stats.handler_errors, stats.replied) == (2, 2)


@pytest.mark.usefixtures("udp_path")
async def test_an_async_handler_raising_cancelled_error_is_counted_udp() -> None:
    async with Server(ServerConfig(port=0, app=cancels_itself, tcp=False)) as server:
        raw = RawUdp(HOST)
        try:
            await raw.send(b"cancel", (HOST, server.port))
            await raw.send(b"Tracy", (HOST, server.port))
            assert await raw.recv() == b"Hello, Tracy!"
            stats = await wait_for_counters(server, "udp", 2)
        finally:
            raw.close()
    assert (stats.handler_errors, stats.replied) == (1, 1)


def never_returns_unless_released(release: asyncio.Event) -> Callable[[bytes, Peer],
                                                                     Awaitable[bytes]]:
    async def handler(request: bytes, peer: Peer) -> bytes:
        if request.startswith(b"hang"):
            await release.wait()
        return b"Hello, " + request + b"!"

    return handler


@pytest.mark.usefixtures("tcp_path")
async def test_a_hung_async_handler_times_out_and_tcp_goes_on() -> None:
    """Regression (issue 16, item 4): no per-request timeout existed; a connection
    holding a hung request was never idle-closed and never answered."""
    config = ServerConfig(port=0, app=never_returns_unless_released(asyncio.Event()),
                          udp=False, handler_timeout=0.2)
    async with Server(config) as server:
        replies = await tcp_exchange(server.port, b"hang\nTracy\n", 2)
        stats = await wait_for_counters(server, "tcp", 2)
    assert replies == [b"error: handler timed out\n", b"Hello, Tracy!\n"]
    assert (stats.handler_timeouts, stats.replied) == (1, 1)


@pytest.mark.usefixtures("udp_path")
async def test_async_calls_are_capped_per_source_and_the_excess_counted() -> None:
    """Regression (issue 16, item 4): an async handler that never returned grew memory
    without limit (81k pending requests: 34 -> 259 MB)."""
    release = asyncio.Event()
    config = ServerConfig(port=0, app=never_returns_unless_released(release), tcp=False,
                          max_pending=100, max_pending_per_source=5, limit_exempt=())
    async with Server(config) as server:
        raw = RawUdp(HOST)
        try:
            for index in range(20):
                await raw.send(b"hang%d" % index, (HOST, server.port))
            for _ in range(500):
                if server.stats()["udp"].dropped_overload == 15:
                    break
                await asyncio.sleep(0.01)
            assert server.async_calls["udp"].inflight.total == 5
            release.set()
            replies = {await raw.recv() for _ in range(5)}
            stats = await wait_for_counters(server, "udp", 20)
        finally:
            raw.close()
    assert replies == {b"Hello, hang%d!" % index for index in range(5)}
    assert (stats.replied, stats.dropped_overload) == (5, 15)


@pytest.mark.usefixtures("tcp_path")
async def test_tcp_lines_over_the_in_flight_cap_are_answered_overloaded() -> None:
    release = asyncio.Event()
    config = ServerConfig(port=0, app=never_returns_unless_released(release), udp=False,
                          max_pending=3, tcp_pipeline=64)
    async with Server(config) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            await reader.readline()
            writer.write(b"".join(b"hang%d\n" % index for index in range(5)))
            for _ in range(500):
                if server.stats()["tcp"].dropped_overload == 2:
                    break
                await asyncio.sleep(0.01)
            release.set()
            async with asyncio.timeout(10):
                replies = [await reader.readline() for _ in range(5)]
        finally:
            writer.close()
        stats = await wait_for_counters(server, "tcp", 5)
    assert replies == [b"Hello, hang%d!\n" % index for index in range(3)] + [
        b"error: overloaded\n"] * 2
    assert (stats.replied, stats.dropped_overload) == (3, 2)


async def test_an_async_call_cancelled_before_it_starts_gives_its_slot_back() -> None:
    """A connection lost in the loop turn that queued its async lines cancels their tasks
    before they ever run; their in-flight slots must come back all the same (a leak would
    end as dropped_overload for that source, forever)."""
    calls = AsyncCalls(max_total=2, max_per_source=2)

    async def never() -> bytes:
        await asyncio.Event().wait()
        return b""

    for _ in range(3):  # more rounds than slots: a leak would refuse the third
        assert calls.try_take("source")
        pending = never()
        task = asyncio.ensure_future(calls.bounded(pending))
        calls.hold(task, "source")
        task.cancel()  # before its first step
        await asyncio.gather(task, return_exceptions=True)
        pending.close()
        assert calls.inflight.total == 0
