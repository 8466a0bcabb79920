"""Tier (c): the UDP fast path (C extension) and the pure path give the same outcomes.

Behaviour, never speed: each test runs on both paths (``udp_path``) and
checks the replies and the counters exactly; the last tests check which path
was chosen and that the choice is announced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable

import pytest

from tests.net.helpers import RawUdp, wait_for_counters
from udpkit import _native
from udpkit.core.counters import CounterSnapshot
from udpkit.core.handler import Peer, Reply
from udpkit.server import Server, ServerConfig

HOST = "127.0.0.1"

pytestmark = pytest.mark.usefixtures("udp_path")


@pytest.fixture
async def raw() -> AsyncIterator[RawUdp]:
    sock = RawUdp(HOST)
    yield sock
    sock.close()


def config(app: object, **options: object) -> ServerConfig:
    return ServerConfig(app=app, host=HOST, port=0, tcp=False, **options)  # type: ignore[arg-type]


def assert_path(server: Server, udp_path: str) -> None:
    """The server runs on the path the test asked for."""
    forced_pure = os.environ.get("UDPKIT_NO_FASTPATH", "") not in ("", "0")
    expected = udp_path == "fast" and _native.built() and not forced_pure
    assert server.udp_fast_path is expected


async def exchange(raw: RawUdp, port: int, requests: list[bytes]) -> list[bytes | None]:
    for request in requests:
        await raw.send(request, (HOST, port))
    return [await raw.recv(timeout=0.3) for _ in requests]


async def test_every_outcome_is_counted_exactly(raw: RawUdp, udp_path: str) -> None:
    """One datagram per outcome: reply, None, raise, empty, oversize, truncated, amplification."""

    def handler(request: bytes, peer: Peer) -> Reply:
        if request == b"none":
            return None
        if request == b"raise":
            raise ValueError("boom")
        if request == b"big":
            return b"x" * 100
        return b"ok " + request

    cfg = config(handler, max_request=50, recv_buffer=51, max_amplification=10.0)
    async with Server(cfg) as server:
        assert_path(server, udp_path)
        port = server.port
        for request in (b"a", b"none", b"raise", b"", b"o" * 51, b"t" * 80, b"big", b"b"):
            await raw.send(request, (HOST, port))
        replies = {await raw.recv(timeout=1.0), await raw.recv(timeout=1.0)}
        assert replies == {b"ok a", b"ok b"}
        assert await raw.recv(timeout=0.2) is None
        stats = await wait_for_counters(server, "udp", 8)
    assert stats == CounterSnapshot(
        received=8, replied=2, no_reply=1, handler_errors=1, dropped_empty=1,
        dropped_oversize=1, dropped_truncated=1, dropped_amplification=1,
    )


async def test_results_that_are_not_bytes_go_through_the_python_checks(
    raw: RawUdp, udp_path: str
) -> None:
    """bytearray and memoryview are replies; a str is the handler's error; an
    awaitable returned by a sync function is awaited."""

    async def later(request: bytes) -> bytes:
        await asyncio.sleep(0)
        return b"later " + request

    def handler(request: bytes, peer: Peer) -> object:
        if request == b"array":
            return bytearray(b"from a bytearray")
        if request == b"view":
            return memoryview(b"from a view")
        if request == b"text":
            return "not bytes"
        return later(request)

    async with Server(config(handler)) as server:
        assert_path(server, udp_path)
        replies = await exchange(raw, server.port, [b"array", b"view", b"text", b"coro"])
        stats = await wait_for_counters(server, "udp", 4)
    assert sorted(r for r in replies if r is not None) == [
        b"from a bytearray", b"from a view", b"later coro"
    ]
    assert stats == CounterSnapshot(received=4, replied=3, handler_errors=1)


async def test_the_handler_gets_a_peer_with_the_senders_address(
    raw: RawUdp, udp_path: str
) -> None:
    seen: list[Peer] = []

    def handler(request: bytes, peer: Peer) -> bytes:
        seen.append(peer)
        return request

    other = RawUdp(HOST)
    try:
        async with Server(config(handler)) as server:
            assert_path(server, udp_path)
            await exchange(raw, server.port, [b"1", b"2"])
            await exchange(other, server.port, [b"3"])
        other_port = other.sock.getsockname()[1]
    finally:
        other.close()
    assert [type(peer) for peer in seen] == [Peer, Peer, Peer]
    assert seen[0] == seen[1] == Peer((HOST, raw.sock.getsockname()[1]), "udp")
    assert seen[2] == Peer((HOST, other_port), "udp")
    assert seen[0].host == HOST
    assert seen[0].transport == "udp"


async def test_ipv6_peer_address_has_four_fields(udp_path: str) -> None:
    from tests.conftest import HAS_IPV6

    if not HAS_IPV6:
        pytest.skip("no IPv6 loopback")
    seen: list[Peer] = []

    def handler(request: bytes, peer: Peer) -> bytes:
        seen.append(peer)
        return request

    raw = RawUdp("::1")
    try:
        cfg = ServerConfig(app=handler, host="::1", port=0, tcp=False)
        async with Server(cfg) as server:
            assert_path(server, udp_path)
            await raw.send(b"six", ("::1", server.port))
            assert await raw.recv() == b"six"
        port = raw.sock.getsockname()[1]
    finally:
        raw.close()
    assert seen == [Peer(("::1", port, 0, 0), "udp")]


async def test_rate_limit_applies_per_datagram_when_not_exempt(
    raw: RawUdp, udp_path: str
) -> None:
    """The C side remembers only verdicts that cannot change; a limited source is asked
    every time."""
    cfg = config("greeting", rate_limit=1.0, rate_burst=3, limit_exempt=())
    async with Server(cfg) as server:
        assert_path(server, udp_path)
        for index in range(10):
            await raw.send(b"n%d" % index, (HOST, server.port))
        stats = await wait_for_counters(server, "udp", 10)
    assert stats.replied == 3
    assert stats.dropped_rate_limited == 7


async def test_a_burst_larger_than_one_batch_is_answered_in_full(
    raw: RawUdp, udp_path: str
) -> None:
    """More datagrams than one recvmmsg (64) and one wake-up (256) take."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    async with Server(config("echo", recv_buffer=2048)) as server:
        assert_path(server, udp_path)
        server_sock = server.udp_endpoints[0].sock
        server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        total = 600
        for index in range(total):
            raw.sock.sendto(b"%d" % index, (HOST, server.port))
        got: set[bytes] = set()
        while len(got) < total:
            reply = await raw.recv(timeout=2.0)
            if reply is None:
                break
            got.add(reply)
        stats = await wait_for_counters(server, "udp", total - server.stats()["udp"].kernel_drops)
    assert stats.received + stats.kernel_drops == total
    assert stats.replied == len(got) == stats.received


async def test_async_handler_takes_the_pure_path(raw: RawUdp, udp_path: str) -> None:
    async def handler(request: bytes, peer: Peer) -> bytes:
        return request

    async with Server(config(handler)) as server:
        assert not server.udp_fast_path
        if udp_path == "fast":
            refusal = server.udp_endpoints[0].fast_path_refusal
            assert refusal in ("async handler", "UDPKIT_NO_FASTPATH is set")
        assert await exchange(raw, server.port, [b"x"]) == [b"x"]


def sync_handler(request: bytes, peer: Peer) -> bytes | Awaitable[Reply]:
    return request


async def test_the_path_is_announced(
    caplog: pytest.LogCaptureFixture, udp_path: str
) -> None:
    with caplog.at_level(logging.INFO, logger="udpkit.server"):
        async with Server(config(sync_handler)) as server:
            assert_path(server, udp_path)
            fast = server.udp_fast_path
    messages = [record.getMessage() for record in caplog.records]
    if fast:
        assert "UDP fast path: recvmmsg/sendmmsg (C extension)" in messages
    else:
        assert any(m.startswith("UDP fast path unavailable (") and m.endswith("): pure Python")
                   for m in messages), messages


async def test_a_missing_extension_falls_back_and_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, raw: RawUdp
) -> None:
    """What a machine without a compiler sees: the pure path, announced, working."""
    monkeypatch.delenv("UDPKIT_NO_FASTPATH", raising=False)
    monkeypatch.setattr(_native, "unavailable", lambda: "C extension not built: simulated")
    with caplog.at_level(logging.INFO, logger="udpkit.server"):
        async with Server(config("greeting")) as server:
            assert not server.udp_fast_path
            assert await exchange(raw, server.port, [b"Michael"]) == [b"Hello, Michael!"]
    assert (
        "UDP fast path unavailable (C extension not built: simulated): pure Python"
        in [record.getMessage() for record in caplog.records]
    )


async def test_fast_path_false_forces_the_pure_path(raw: RawUdp) -> None:
    async with Server(config("greeting", fast_path=False)) as server:
        assert not server.udp_fast_path
        assert server.udp_endpoints[0].fast_path_refusal == "disabled by configuration"
        assert await exchange(raw, server.port, [b"Tracy"]) == [b"Hello, Tracy!"]
