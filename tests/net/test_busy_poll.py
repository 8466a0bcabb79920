"""Tier (c): ``busy_poll`` on real sockets, on the C fast path and the pure path.

A UDP client in a thread keeps a steady ping-pong stream going, so the server
spins; meanwhile TCP lines and a timer of the same event loop must be served
(the loop keeps its turn between spin slices), every datagram is answered and
counted, and once the stream stops the socket goes back to sleeping in the
loop (no more polls while idle) and still answers a new request.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from tests.net.helpers import wait_for_counters
from udpkit.core.handler import Peer, Reply
from udpkit.server import Server, ServerConfig
from udpkit.server.udp import UdpEndpoint

HOST = "127.0.0.1"
STREAM = 400  # datagrams of the ping-pong stream
DURATION = 0.005  # long enough that a thread's ping-pong keeps the spin going

pytestmark = pytest.mark.usefixtures("udp_path")


class Recorder:
    """The handler: greets, and notes whether UDP was being busy-polled at each TCP line."""

    def __init__(self) -> None:
        self.endpoint: UdpEndpoint | None = None
        self.tcp_while_spinning = 0

    def __call__(self, request: bytes, peer: Peer) -> Reply:
        if peer.transport == "tcp" and self.endpoint is not None:
            self.tcp_while_spinning += self.endpoint.busy_poll.spinning
        return b"Hello, %b!" % request


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Recorder]]:
    recorder = Recorder()
    config = ServerConfig(app=recorder, host=HOST, port=0, busy_poll=DURATION)
    async with Server(config) as server:
        recorder.endpoint = server.udp_endpoints[0]
        yield server, recorder


def ping_pong(port: int, count: int, replies: list[bytes], stop: threading.Event) -> None:
    """One request in flight at a time, ``count`` times (or until ``stop``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.connect((HOST, port))
        for index in range(count):
            if stop.is_set():
                return
            try:
                sock.send(b"n%d" % index)
                replies.append(sock.recv(100))
            except OSError:  # timed out, or refused once the server has closed
                return


async def test_tcp_and_timers_keep_their_turn_while_udp_spins(
    served: tuple[Server, Recorder], udp_path: str
) -> None:
    server, recorder = served
    endpoint = server.udp_endpoints[0]
    replies: list[bytes] = []
    stop = threading.Event()
    stream = threading.Thread(target=ping_pong, args=(server.port, STREAM, replies, stop))
    timer_while_spinning = 0

    def tick() -> None:
        nonlocal timer_while_spinning
        timer_while_spinning += endpoint.busy_poll.spinning

    stream.start()
    try:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        assert await reader.readline() == b"Welcome!\n"
        lines = 0
        async with asyncio.timeout(10):
            while stream.is_alive() and lines < 200:
                asyncio.get_running_loop().call_later(0.0005, tick)
                writer.write(b"line%d\n" % lines)
                assert await reader.readline() == b"Hello, line%d!\n" % lines
                lines += 1
                await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()
    finally:
        stop.set()
        await asyncio.to_thread(stream.join, 10)
    assert lines > 0
    assert replies == [b"Hello, n%d!" % i for i in range(len(replies))]
    snapshot = await wait_for_counters(server, "udp", len(replies))
    assert snapshot.replied == len(replies)
    stats = endpoint.busy_poll.stats
    assert stats.spins >= 1
    assert stats.found_spinning > 0  # the stream was taken spinning, without wake-ups
    # TCP lines and timers ran while the UDP socket was out of the loop, polled.
    assert recorder.tcp_while_spinning > 0
    assert timer_while_spinning > 0


async def test_an_idle_server_goes_back_to_sleep(
    served: tuple[Server, Recorder], udp_path: str
) -> None:
    server, _ = served
    endpoint = server.udp_endpoints[0]
    replies: list[bytes] = []
    await asyncio.to_thread(ping_pong, server.port, 50, replies, threading.Event())
    assert len(replies) == 50
    async with asyncio.timeout(5):
        while endpoint.busy_poll.spinning:
            await asyncio.sleep(0.001)
    polls = endpoint.busy_poll.stats.polls
    sleeps = endpoint.busy_poll.stats.sleeps
    await asyncio.sleep(0.05)  # idle: nothing polls the socket, the loop sleeps
    assert endpoint.busy_poll.stats.polls == polls
    assert sleeps >= 1
    # Back in the loop's interest set: a new request wakes the server again.
    more: list[bytes] = []
    await asyncio.to_thread(ping_pong, server.port, 1, more, threading.Event())
    assert more == [b"Hello, n0!"]
    assert endpoint.busy_poll.stats.spins >= 2


async def test_a_stop_while_spinning_answers_what_came_and_closes(udp_path: str) -> None:
    """Shutdown in the middle of a stream: the spin ends, every datagram received is
    answered or accounted for, and nothing is left polling."""
    recorder = Recorder()
    config = ServerConfig(app=recorder, host=HOST, port=0, tcp=False, busy_poll=DURATION)
    replies: list[bytes] = []
    stop = threading.Event()
    async with Server(config) as server:
        endpoint = server.udp_endpoints[0]
        stream = threading.Thread(target=ping_pong, args=(server.port, 10**6, replies, stop))
        stream.start()
        async with asyncio.timeout(5):
            while len(replies) < 50:
                await asyncio.sleep(0.001)
    stop.set()
    await asyncio.to_thread(stream.join, 10)
    assert not endpoint.busy_poll.spinning
    snapshot = server.stats()["udp"]
    assert snapshot.accounted == snapshot.received
    assert snapshot.replied >= len(replies)


def test_a_duration_out_of_range_is_a_usage_error() -> None:
    from udpkit.core.errors import UsageError

    with pytest.raises(UsageError, match="busy-poll"):
        ServerConfig(busy_poll=1.0)


async def test_off_by_default_nothing_spins(udp_path: str) -> None:
    """The default path is the plain one: the loop calls the read itself, no spin."""
    from udpkit.core.busy_poll import BusyPollStats

    async with Server(ServerConfig(host=HOST, port=0, tcp=False)) as server:
        endpoint = server.udp_endpoints[0]
        replies: list[bytes] = []
        await asyncio.to_thread(ping_pong, server.port, 20, replies, threading.Event())
    assert len(replies) == 20
    assert not endpoint.busy_poll.enabled
    assert endpoint.busy_poll.stats == BusyPollStats()
