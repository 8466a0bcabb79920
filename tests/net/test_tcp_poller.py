"""Tier (c): ``udpkit._fastpath.LinePoller``, the C reader of TCP connections.

First the C object alone, on socketpairs and without an event loop: what it
reads, answers and counts, and each way it hands a connection back to its
owner.  Then the server on real loopback connections, on asyncio's loop and
on uvloop: a connection goes to the poller once admitted, comes back to the
transport when a send blocks, an async reply is pending or a timeout fires,
and goes to the poller again once it is simple again.  Last, hypothesis: any
split of a stream of every kind of line gives the same replies and counters
through the poller as on the pure path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.handlers import mixed_handler
from tests.net.helpers import wait_for_counters
from tests.transports import FakeTransport
from udpkit import _native
from udpkit.core.admission import TOKENS_PER_GRANT
from udpkit.core.counters import Counters
from udpkit.core.framing import EXIT, LineFraming
from udpkit.core.handler import Peer, Reply
from udpkit.server import Server, ServerConfig, tcp
from udpkit.server.tcp import TcpConnection

LINE_POLLER = _native.line_poller_type()
LINE_READER = _native.line_reader_type()
pytestmark = pytest.mark.skipif(
    LINE_POLLER is None, reason="udpkit._fastpath not built (or UDPKIT_NO_FASTPATH)"
)
HAND_BLOCKED, HAND_CLOSED = _native.HAND_BLOCKED, _native.HAND_CLOSED
HAND_FAILED, HAND_UNUSUAL = _native.HAND_FAILED, _native.HAND_UNUSUAL
PEER = Peer(("127.0.0.1", 4321), "tcp")
Runner = Callable[[Coroutine[Any, Any, None]], None]


def greet(request: bytes, peer: Peer) -> bytes:
    return b"Hello, " + request + b"!"


class Owner:
    """Stands in for the connection (a ``_native.PolledConnection``): records what the
    poller reports and hands back."""

    def __init__(self) -> None:
        self.handed: list[tuple[int, bytes]] = []
        self.reports: list[tuple[int, int, bytes, object]] = []
        self.read: list[tuple[int, int, float]] = []

    def lines_read(self, taken: int, partial_left: int, now: float) -> None:
        self.read.append((taken, partial_left, now))

    def handed_back(
        self, kind: int, unsent: bytes, status: int, taken: int, rest: bytes, extra: object,
        now: float,
    ) -> None:
        self.handed.append((kind, unsent))
        self.reports.append((status, taken, rest, extra))


class Rig:
    """One LinePoller, one connection on a socketpair: ``peer`` is the client's end."""

    def __init__(self, handler: Any = greet, max_line: int = 100, observe: Any = None,
                 turn_bytes: int = 65536) -> None:
        self.server, self.peer = socket.socketpair()
        self.server.setblocking(False)
        self.counters = Counters()
        self.writes: list[bytes] = []
        assert LINE_READER is not None
        self.reader = LINE_READER(
            handler, PEER, self.counters, self.writes.append, observe, max_line=max_line,
            exit_line=EXIT, empty_reply=b"error: empty request\n", grant=TOKENS_PER_GRANT,
        )
        assert LINE_POLLER is not None
        # Turns as large as one recv(): these tests are about what one poll does.
        self.poller = LINE_POLLER(
            self.counters, observe, turn_bytes=turn_bytes, poll_bytes=1 << 20
        )
        self.owner = Owner()
        self.poller.add(self.reader, self.server.fileno(), self.owner, b"")

    def send_and_poll(self, data: bytes) -> None:
        self.peer.sendall(data)
        self.poller.poll()

    def received(self) -> bytes:
        self.peer.setblocking(False)
        chunks = []
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.poller.close()
        self.server.close()
        self.peer.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.close()


def test_lines_are_answered_from_the_socket_and_counted(rig: Rig) -> None:
    rig.send_and_poll(b"Michael\r\n\nTracy\nSar")
    assert rig.received() == b"Hello, Michael!\nerror: empty request\nHello, Tracy!\n"
    snapshot = rig.counters.snapshot()
    assert (snapshot.received, snapshot.replied, snapshot.dropped_empty) == (3, 2, 1)
    ((taken, left, now),) = rig.owner.read  # facts, one report a chunk
    assert (taken, left) == (3, 3)  # the unfinished "Sar"
    assert now > 0
    rig.send_and_poll(b"ah\n")
    assert rig.received() == b"Hello, Sarah!\n"
    assert rig.owner.read[1][:2] == (1, 0)
    assert rig.owner.handed == []  # nothing unusual: still polled
    assert rig.reader.polled
    assert rig.poller.count() == 1
    assert rig.writes == []  # the poller sends itself; the transport's write is not used


def test_the_lent_partial_line_comes_back_whole(rig: Rig) -> None:
    """The poller keeps no clock: it reports each chunk, and gives the partial line
    back on remove()."""
    rig.send_and_poll(b"slo")
    rig.send_and_poll(b"w")
    assert [(taken, left) for taken, left, _ in rig.owner.read] == [(0, 3), (0, 4)]
    assert rig.received() == b""
    assert rig.poller.remove(rig.reader) == b"slow"


def test_the_peer_closing_hands_the_connection_back_unread(rig: Rig) -> None:
    rig.peer.shutdown(socket.SHUT_WR)
    rig.poller.poll()
    assert rig.owner.handed == [(HAND_CLOSED, b"")]
    assert rig.owner.reports == [(_native.LINES_DONE, 0, b"", None)]  # the partial, back
    assert not rig.reader.polled
    assert rig.poller.count() == 0
    rig.poller.poll()  # no longer in the epoll set: nothing more happens
    assert rig.owner.handed == [(HAND_CLOSED, b"")]


def test_a_line_for_python_hands_back_after_the_replies_before_it(rig: Rig) -> None:
    rig.send_and_poll(b"a\nexit\nb\n")
    assert rig.received() == b"Hello, a!\n"
    assert rig.owner.handed == [(HAND_UNUSUAL, b"")]
    assert rig.owner.reports == [(_native.LINES_EXIT, 1, b"b\n", None)]  # one report


def test_a_send_the_socket_cannot_take_hands_back_the_rest() -> None:
    rig = Rig(max_line=10)
    try:
        rig.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lines = [b"n%05d" % i for i in range(3000)]  # ~54 kB of replies to one recv
        rig.send_and_poll(b"\n".join(lines) + b"\n")
        assert len(rig.owner.handed) == 1
        kind, unsent = rig.owner.handed[0]
        assert kind == HAND_BLOCKED
        assert unsent
        expected = b"".join(greet(line, PEER) + b"\n" for line in lines)
        assert rig.received() + unsent == expected  # nothing lost, nothing twice
        assert rig.counters.snapshot().replied == 3000
    finally:
        rig.close()


def test_a_python_error_in_between_hands_back_and_is_reported(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", reported.append)

    def broken(taken: int, partial_left: int, now: float) -> None:
        raise TypeError("the owner failed")

    rig.poller.remove(rig.reader)
    rig.owner.lines_read = broken  # type: ignore[method-assign]
    rig.poller.add(rig.reader, rig.server.fileno(), rig.owner, b"")  # looked up here
    rig.send_and_poll(b"a\n")
    assert rig.owner.handed == [(HAND_FAILED, b"")]
    assert [type(r.exc_value) for r in reported] == [TypeError]
    assert not rig.reader.polled


def test_latency_is_observed_once_per_reply() -> None:
    seen: list[float] = []
    rig = Rig(observe=seen.append)
    try:
        rig.send_and_poll(b"a\n\nb\n")
        assert len(seen) == 2
        assert all(0 <= elapsed < 5 for elapsed in seen)
    finally:
        rig.close()


def test_add_and_remove_refuse_what_would_corrupt_the_set(rig: Rig) -> None:
    with pytest.raises(ValueError, match="polled already"):
        rig.poller.add(rig.reader, rig.server.fileno(), rig.owner, b"")
    with pytest.raises(RuntimeError, match="LinePoller"):
        rig.reader.feed(b"", b"x\n")  # one reader of a connection at a time
    assert rig.poller.remove(rig.reader) == b""
    assert rig.poller.remove(rig.reader) is None
    assert LINE_POLLER is not None
    other = LINE_POLLER(Counters(), turn_bytes=1024, poll_bytes=16384)
    with pytest.raises(ValueError, match="other counters"):
        other.add(rig.reader, rig.server.fileno(), rig.owner, b"")
    other.close()
    assert rig.owner.handed == []  # remove() does not call the owner back
    rig.poller.close()
    assert rig.poller.fileno() == -1
    with pytest.raises(ValueError, match="closed"):
        rig.poller.add(rig.reader, rig.server.fileno(), rig.owner, b"")


def test_a_handler_that_lets_go_of_its_own_connection_is_not_read_again() -> None:
    """A handler may make Python stop polling a connection mid-chunk (here its own):
    the poller sends nothing more on it and gives the replies so far to the owner."""
    holder: dict[str, Any] = {}

    def handler(request: bytes, peer: Peer) -> bytes:
        holder["poller"].remove(holder["reader"])
        return b"bye " + request

    rig = Rig(handler=handler)
    try:
        holder.update(poller=rig.poller, reader=rig.reader)
        rig.send_and_poll(b"a\nb\n")
        assert rig.received() == b""
        assert rig.owner.handed == [(HAND_BLOCKED, b"bye a\nbye b\n")]  # the chunk in hand
        assert rig.poller.count() == 0
        rig.send_and_poll(b"c\n")
        assert len(rig.owner.handed) == 1  # not read again
    finally:
        rig.close()


# -- in the server, on both event loops ---------------------------------------------

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a scenario to the end on asyncio's own loop, then on uvloop (as deployed
    with ``udpkit[fast]``): the two start and pause reading differently."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if request.param == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop

    def run_scenario(scenario: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario, 20))

    return run_scenario


def only_connection(server: Server) -> TcpConnection:
    (connection,) = server.connections
    return connection


def only_connection_poller(server: Server) -> _native.LinePoller:
    """The C poller of the server's connections (they share one)."""
    (poller,) = {c.registry.poller for c in server.connections}
    assert poller is not None
    return poller


async def until(condition: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def read_line(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(3):
        return await reader.readline()


def test_an_admitted_connection_is_read_by_the_poller(run: Runner) -> None:
    run(_an_admitted_connection_is_read_by_the_poller())


async def _an_admitted_connection_is_read_by_the_poller() -> None:
    async with Server(ServerConfig(host="127.0.0.1", port=0, udp=False)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await read_line(reader) == b"Welcome!\n"
        writer.write(b"Mic")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"hael\n")
        assert await read_line(reader) == b"Hello, Michael!\n"
        connection = only_connection(server)
        assert connection.polled
        poller = connection.registry.poller
        assert poller is not None
        assert poller.count() == 1
        assert not connection.transport.is_reading()  # type: ignore[union-attr]
        writer.write(b"exit\n")
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()
        await until(lambda: not server.connections)
        assert poller.count() == 0
        stats = server.stats()["tcp"]
        assert (stats.received, stats.replied, stats.connections_closed) == (1, 1, 1)


def test_a_blocked_send_goes_through_the_transport_then_back_to_the_poller(run: Runner) -> None:
    run(_a_blocked_send_goes_through_the_transport_then_back_to_the_poller())


async def _a_blocked_send_goes_through_the_transport_then_back_to_the_poller() -> None:
    # More replies than the server's socket (tcp_wmem at most 4 MiB here) and the
    # client's can hold while the client reads nothing.
    count = 600_000
    async with Server(ServerConfig(host="127.0.0.1", port=0, udp=False)) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        assert await read_line(reader) == b"Welcome!\n"
        connection = only_connection(server)
        await until(lambda: connection.polled)
        writer.write(b"".join(b"n%d\n" % i for i in range(count)))  # and read nothing yet
        await until(lambda: not connection.polled, timeout=10)
        assert connection.transport.get_write_buffer_size() > 0  # type: ignore[union-attr]
        expected = b"".join(b"Hello, n%d!\n" % i for i in range(count))
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(expected)) == expected
        writer.write(b"again\n")
        assert await read_line(reader) == b"Hello, again!\n"
        await until(lambda: connection.polled)  # simple again: polled again
        writer.close()
        stats = await wait_for_counters(server, "tcp", count + 1)
        assert (stats.replied, stats.send_errors) == (count + 1, 0)


def test_an_async_reply_takes_the_connection_back_until_it_is_written(run: Runner) -> None:
    run(_an_async_reply_takes_the_connection_back_until_it_is_written())


async def _an_async_reply_takes_the_connection_back_until_it_is_written() -> None:
    async def slow(request: bytes, peer: Peer) -> Reply:
        await asyncio.sleep(0.05)
        return b"slow " + request

    def handler(request: bytes, peer: Peer) -> object:
        return slow(request, peer) if request.startswith(b"s") else b"fast " + request

    config = ServerConfig(app=handler, host="127.0.0.1", port=0, udp=False)  # type: ignore[arg-type]
    async with Server(config) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_line(reader)
        connection = only_connection(server)
        await until(lambda: connection.polled)
        writer.write(b"a\ns1\nb\n")
        assert [await read_line(reader) for _ in range(3)] == [
            b"fast a\n", b"slow s1\n", b"fast b\n"]
        writer.write(b"c\n")
        assert await read_line(reader) == b"fast c\n"
        await until(lambda: connection.polled)
        writer.close()


def test_timeouts_close_polled_connections(run: Runner) -> None:
    run(_timeouts_close_polled_connections())


async def _timeouts_close_polled_connections() -> None:
    # The idle timeout runs from the welcome until "one" too: long enough that a loaded
    # machine's set-up never reaches it (it made this test flaky at 0.6 s).
    config = ServerConfig(host="127.0.0.1", port=0, udp=False, tcp_idle_timeout=2.0,
                          tcp_line_timeout=0.6)
    async with Server(config) as server:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", server.port)
        for reader in (idle_reader, slow_reader):
            await read_line(reader)
        await until(lambda: len(server.connections) == 2
                    and all(c.polled for c in server.connections))
        poller = only_connection_poller(server)
        idle_writer.write(b"one\n")
        assert await read_line(idle_reader) == b"Hello, one!\n"
        for _ in range(3):  # a line that never ends, a byte at a time
            slow_writer.write(b"x")
            await asyncio.sleep(0.05)
        async with asyncio.timeout(6):
            assert await idle_reader.read() == b""
            assert await slow_reader.read() == b""
        for writer in (idle_writer, slow_writer):
            writer.close()
        await until(lambda: not server.connections)
        stats = server.stats()["tcp"]
        assert (stats.closed_idle, stats.closed_slow) == (1, 1)
        assert poller.count() == 0


def test_shutdown_closes_polled_connections_and_the_poller(run: Runner) -> None:
    run(_shutdown_closes_polled_connections_and_the_poller())


async def _shutdown_closes_polled_connections_and_the_poller() -> None:
    server = Server(ServerConfig(host="127.0.0.1", port=0, udp=False))
    await server.startup()
    readers = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await read_line(reader)
        writer.write(b"half a li")
        readers.append((reader, writer))
    await until(lambda: len(server.connections) == 5
                and all(c.polled for c in server.connections))
    poller = only_connection_poller(server)
    await until(lambda: poller.count() == 5 and all(
        c.session.line_started is not None for c in server.connections))
    await server.shutdown()
    assert poller.fileno() == -1
    assert poller.count() == 0
    for reader, writer in readers:
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()


def test_the_poller_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UDPKIT_NO_TCP_POLLER", "1")
    assert tcp.tcp_line_poller() is None
    monkeypatch.setenv("UDPKIT_NO_TCP_POLLER", "0")
    assert tcp.tcp_line_poller() is LINE_POLLER


# -- the poller against the pure path, any split ------------------------------------


class SocketTransport(FakeTransport):
    """A transport over one end of a socketpair; the test plays the event loop's
    reading part by hand (:func:`feed_from_socket`), the real loop runs the poller."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.reading = True

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.sock.sendall(data)

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 4321), "socket": self.sock}.get(name)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def feed_from_socket(connection: TcpConnection, transport: SocketTransport) -> None:
    """A few event loop rounds: the poller reads if it holds the connection, else the
    "transport" does (what is waiting on the socket, or the end of the stream)."""
    for _ in range(6):
        await asyncio.sleep(0)
        if connection.polled or not transport.reading or transport.closed:
            continue
        try:
            data = transport.sock.recv(1 << 16)
        except BlockingIOError:
            continue
        if data:
            connection.data_received(data)
        else:
            connection.eof_received()
            transport.pause_reading()


def serve_chunks(chunks: list[bytes], polled: bool) -> tuple[bytes, Any, bool]:
    """What a client sending ``chunks`` gets back, and the counters, with the C poller
    reading the connection (``polled``) or the pure path."""
    server_end, client_end = socket.socketpair()
    server_end.setblocking(False)

    async def go() -> tuple[Any, bool]:
        counters = Counters()
        settings = tcp.TcpSettings(
            handler=mixed_handler, counters=counters, pipeline=4,  # type: ignore[arg-type]
            access_log=False, admission=None, max_connections=10, max_per_source=10,
            idle_timeout=60, line_timeout=60, write_timeout=60, write_buffer=1 << 20,
            line_reader=LINE_READER if polled else None,
            line_poller=LINE_POLLER if polled else None,
        )
        registry = tcp.ConnectionRegistry(settings)
        connection = TcpConnection(settings, LineFraming(6), registry)
        transport = SocketTransport(server_end)
        connection.connection_made(transport)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert connection.polled is polled
        for chunk in chunks:
            client_end.sendall(chunk)
            await feed_from_socket(connection, transport)
        client_end.shutdown(socket.SHUT_WR)
        await feed_from_socket(connection, transport)
        connection.connection_lost(None)
        registry.close()
        return counters.snapshot(), transport.closed

    try:
        snapshot, closed = asyncio.run(go())
        client_end.setblocking(False)
        replies = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := client_end.recv(1 << 16):
                replies += chunk
        return replies, snapshot, closed
    finally:
        server_end.close()
        client_end.close()


POLLER_WORDS = [b"x", b"hi", b"n", b"r", b"b", b"a", b"exit", b"", b"longer!"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(
        st.tuples(st.sampled_from(POLLER_WORDS), st.sampled_from([b"\n", b"\r\n"])), max_size=12
    ),
    tail=st.sampled_from([b"", b"pa", b"x" * 8]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_split_gives_the_same_replies_and_counters_through_the_poller(
    body: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]
) -> None:
    """The poller, handing back and taking again as the stream asks, answers and
    counts as the pure path does, however the stream is cut into sends."""
    stream = b"".join(word + end for word, end in body) + tail
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)] or [b""]
    chunks = [chunk for chunk in chunks if chunk] or [b"x\n"]
    assert serve_chunks(chunks, polled=True) == serve_chunks(chunks, polled=False)


def test_one_connection_reads_at_most_its_turn_per_poll() -> None:
    """Issue 16, item 11: a greedy client had every byte it sent handled in one callback
    (up to 4 rounds of 64 KiB), holding the event loop for everyone else.  Now each poll
    reads at most turn_bytes of it; the rest waits in its socket for the next poll."""
    rig = Rig(turn_bytes=40)
    try:
        rig.send_and_poll(b"".join(b"n%02d\n" % i for i in range(30)))  # 120 bytes
        assert rig.counters.received == 10  # 40 bytes of 4-byte lines: one turn
        assert [(taken, left) for taken, left, _ in rig.owner.read] == [(10, 0)]
        rig.poller.poll()
        rig.poller.poll()
        assert rig.counters.received == 30
        assert rig.received() == b"".join(b"Hello, n%02d!\n" % i for i in range(30))
        assert rig.owner.handed == []  # budgets never hand a connection back
    finally:
        rig.close()


def test_a_poll_reads_about_poll_bytes_from_all_connections() -> None:
    """The total per callback: once poll_bytes are read, the other ready connections
    wait for the next callback (level-triggered, still ready)."""
    assert LINE_POLLER is not None
    assert LINE_READER is not None
    counters = Counters()
    poller = LINE_POLLER(counters, turn_bytes=8, poll_bytes=16)
    pairs = [socket.socketpair() for _ in range(4)]
    owners = []
    for server, peer in pairs:
        server.setblocking(False)
        reader = LINE_READER(
            greet, PEER, counters, lambda _: None, max_line=100, exit_line=EXIT,
            empty_reply=b"error: empty request\n", grant=TOKENS_PER_GRANT,
        )
        owner = Owner()
        owners.append((reader, owner))
        poller.add(reader, server.fileno(), owner, b"")
        peer.sendall(b"abc\n" * 2)  # 8 bytes: one turn each
    poller.poll()
    assert counters.received == 4  # 16 bytes: two connections' turns
    poller.poll()
    assert counters.received == 8
    poller.close()
    for server, peer in pairs:
        server.close()
        peer.close()
