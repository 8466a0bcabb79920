"""Tier (c): ``busy_poll`` on real sockets, on the C fast path and the pure path.

A UDP client in another process keeps a steady ping-pong stream going, so the server
spins; meanwhile TCP lines and a timer of the same event loop must be served
(the loop keeps its turn between spin slices), every datagram is answered and
counted, and once the stream stops the socket goes back to sleeping in the
loop (no more polls while idle) and still answers a new request.
"""

from __future__ import annotations

import asyncio
import sys
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


# The client is another process, as real clients are: a thread would need the GIL that
# the pure path's spin holds, and would slow the stream it is meant to keep steady.
PING_PONG = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2.0)
sock.connect(("127.0.0.1", port))
answered = 0
for index in range(count):
    try:
        sock.send(b"n%d" % index)
        if sock.recv(100) != b"Hello, n%d!" % index:
            break
    except OSError:  # timed out, or refused once the server has closed
        break
    answered += 1
print(answered)
"""


async def start_ping_pong(port: int, count: int) -> asyncio.subprocess.Process:
    """One request in flight at a time, ``count`` times; prints how many were answered."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", PING_PONG, str(port), str(count), stdout=asyncio.subprocess.PIPE
    )


async def answered(process: asyncio.subprocess.Process) -> int:
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    return int(out)


async def ping_pong(port: int, count: int) -> int:
    return await answered(await start_ping_pong(port, count))


async def test_tcp_and_timers_keep_their_turn_while_udp_spins(
    served: tuple[Server, Recorder], udp_path: str
) -> None:
    server, recorder = served
    endpoint = server.udp_endpoints[0]
    stream = await start_ping_pong(server.port, STREAM)
    timer_while_spinning = 0

    def tick() -> None:
        nonlocal timer_while_spinning
        timer_while_spinning += endpoint.busy_poll.spinning

    try:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        assert await reader.readline() == b"Welcome!\n"
        lines = 0
        async with asyncio.timeout(10):
            while stream.returncode is None and lines < 200:
                asyncio.get_running_loop().call_later(0.0005, tick)
                writer.write(b"line%d\n" % lines)
                assert await reader.readline() == b"Hello, line%d!\n" % lines
                lines += 1
                await asyncio.sleep(0.001)
        writer.close()
        await writer.wait_closed()
    finally:
        replies = await answered(stream)
    assert lines > 0
    assert replies == STREAM
    snapshot = await wait_for_counters(server, "udp", replies)
    assert snapshot.replied == replies
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
    assert await ping_pong(server.port, 50) == 50
    async with asyncio.timeout(5):
        while endpoint.busy_poll.spinning:
            await asyncio.sleep(0.001)
    polls = endpoint.busy_poll.stats.polls
    sleeps = endpoint.busy_poll.stats.sleeps
    await asyncio.sleep(0.05)  # idle: nothing polls the socket, the loop sleeps
    assert endpoint.busy_poll.stats.polls == polls
    assert sleeps >= 1
    # Back in the loop's interest set: a new request wakes the server again.
    assert await ping_pong(server.port, 1) == 1
    assert endpoint.busy_poll.stats.spins >= 2


async def test_a_stop_while_spinning_answers_what_came_and_closes(udp_path: str) -> None:
    """Shutdown in the middle of a stream: the spin ends, every datagram received is
    answered or accounted for, and nothing is left polling."""
    recorder = Recorder()
    config = ServerConfig(app=recorder, host=HOST, port=0, tcp=False, busy_poll=DURATION)
    async with Server(config) as server:
        endpoint = server.udp_endpoints[0]
        stream = await start_ping_pong(server.port, 10**6)
        async with asyncio.timeout(10):
            while server.stats()["udp"].replied < 50:
                await asyncio.sleep(0.001)
    replies = await answered(stream)  # it stops when the closed server refuses
    assert not endpoint.busy_poll.spinning
    snapshot = server.stats()["udp"]
    assert snapshot.accounted == snapshot.received
    assert snapshot.replied >= replies >= 50


def test_a_duration_out_of_range_is_a_usage_error() -> None:
    from udpkit.core.errors import UsageError

    with pytest.raises(UsageError, match="busy-poll"):
        ServerConfig(busy_poll=1.0)


async def test_off_by_default_nothing_spins(udp_path: str) -> None:
    """The default path is the plain one: the loop calls the read itself, no spin."""
    from udpkit.core.busy_poll import BusyPollStats

    async with Server(ServerConfig(host=HOST, port=0, tcp=False)) as server:
        endpoint = server.udp_endpoints[0]
        assert await ping_pong(server.port, 20) == 20
    assert not endpoint.busy_poll.enabled
    assert endpoint.busy_poll.stats == BusyPollStats()


def test_busy_polling_and_handler_threads_are_refused_together() -> None:
    """The pure path's spin holds the GIL between polls; handler threads would wait for
    it a switch interval (5 ms) at a time."""
    from udpkit.core.errors import UsageError

    with pytest.raises(UsageError, match="do not mix"):
        ServerConfig(busy_poll=50e-6, handler_threads=2)

