"""Tier (a): TCP line handling on the C line reader and on the pure path, compared.

A :class:`TcpConnection` on a fake transport and a hand-driven clock is fed
the same stream, split anywhere, once with the C ``LineReader`` and once
without: the bytes written, every counter, whether it closed and its
session's idle/line timestamps after each segment must be the same.  The handler
gives every kind of result by the request's first letter (bytes, ``None``,
raise, bytes-like, wrong type, awaitable), the stream holds empty lines,
``\\r\\n``, ``exit`` and lines over the limit.  The same for len16 framing
(the same C splitter with a two-byte length prefix): empty messages (which
close), ``exit`` (a message like any), lengths over the limit, a reply too long
for the prefix, and streams ending inside a prefix or a message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.handlers import mixed_handler
from tests.transports import FakeTransport
from udpkit import _native
from udpkit.core.admission import TOKENS_PER_GRANT
from udpkit.core.counters import Counters, CounterSnapshot
from udpkit.core.framing import EXIT, LEN16_PREFIX, FramingName, make_framing
from udpkit.core.handler import Peer
from udpkit.server.tcp import ConnectionRegistry, TcpConnection, TcpSettings

LINE_READER = _native.line_reader_type()
needs_reader = pytest.mark.skipif(
    LINE_READER is None, reason="udpkit._fastpath not built (or UDPKIT_NO_FASTPATH)"
)
MAX_LINE = 6
TOO_LONG_FOR_LEN16 = b"L" * 0x10000


def handler(request: bytes, peer: Peer) -> object:
    """:func:`mixed_handler`, and ``L``: a reply longer than a len16 prefix can say."""
    return TOO_LONG_FOR_LEN16 if request == b"L" else mixed_handler(request, peer)


Outcome = tuple[bytes, CounterSnapshot, bool, list[tuple[float, float | None]]]


def new_reader(*args: Any, **kwargs: Any) -> _native.LineReader:
    assert LINE_READER is not None
    return LINE_READER(
        *args, max_line=MAX_LINE, exit_line=EXIT, empty_reply=b"error: empty request\n",
        grant=TOKENS_PER_GRANT, **kwargs,
    )


def open_connection(
    reader: _native.LineReaderType | None, framing: FramingName = "line", *,
    handler: Any = handler, idle_timeout: float = 60, line_timeout: float = 60,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[TcpConnection, FakeTransport, Counters, ConnectionRegistry]:
    """One connection made on a fake transport, its counters and registry (close the
    registry at the end)."""
    counters = Counters()
    options = TcpSettings(
        handler=handler, counters=counters, pipeline=4, access_log=False, admission=None,
        max_connections=10, max_per_source=10, idle_timeout=idle_timeout,
        line_timeout=line_timeout, write_timeout=60, write_buffer=1 << 20,
        line_reader=reader, clock=clock,
    )
    registry = ConnectionRegistry(options)
    connection = TcpConnection(options, make_framing(framing, max_line=MAX_LINE), registry)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport, counters, registry


def run(
    chunks: list[bytes], reader: _native.LineReaderType | None, gaps: list[int] | None = None,
    idle_timeout: float = 60, line_timeout: float = 60, framing: FramingName = "line",
) -> Outcome:
    """Feed ``chunks`` to one connection, the clock moving by ``gaps`` (cycled; one
    second each if not given) before each chunk, the registry's sweep looking at
    the connection just before the chunk arrives."""
    steps = itertools.cycle(gaps or [1])
    now = 1.0

    async def go() -> Outcome:
        nonlocal now
        connection, transport, counters, registry = open_connection(
            reader, framing, idle_timeout=idle_timeout, line_timeout=line_timeout,
            clock=lambda: now)
        assert (connection.reader is not None) is (reader is not None)
        session = connection.session
        times: list[tuple[float, float | None]] = []
        for chunk in chunks:
            now += next(steps)
            connection.check_timeouts(now)
            connection.data_received(chunk)
            times.append((session.last_request, session.line_started))
            for _ in range(4):  # let async replies finish, the same way for both
                await asyncio.sleep(0)
        connection.eof_received()
        for _ in range(4):
            await asyncio.sleep(0)
        connection.connection_lost(None)
        registry.close()
        return b"".join(transport.written), counters.snapshot(), transport.closed, times

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def _quiet_handler_errors() -> Iterator[None]:
    logger = logging.getLogger("udpkit")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


WORDS = [b"x", b"hi", b"n", b"r", b"b", b"w", b"a", b"an", b"exit", b"", b"longer!", b"sixsix"]
lines = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from([b"\n", b"\r\n"])), max_size=20)


@needs_reader
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=lines,
    tail=st.sampled_from([b"", b"pa", b"x" * (MAX_LINE + 1), b"x" * (MAX_LINE + 2)]),
    sync_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_split_of_any_stream_gives_the_same_result_on_both_paths(
    body: list[tuple[bytes, bytes]], tail: bytes, sync_only: bool, cuts: list[int]
) -> None:
    words = [(w if not (sync_only and w[:1] == b"a") else b"s" + w, end) for w, end in body]
    stream = b"".join(word + end for word, end in words) + tail
    chunks = split(stream, cuts) or [b""]
    assert LINE_READER is not None
    assert run(chunks, LINE_READER) == run(chunks, None)


@needs_reader
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=lines,
    tail=st.sampled_from([b"", b"pa", b"x" * (MAX_LINE + 1)]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    gaps=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=8),
    idle_timeout=st.integers(min_value=1, max_value=12),
    line_timeout=st.integers(min_value=1, max_value=6),
)
def test_any_timing_gives_the_same_timeouts_and_clocks_on_both_paths(
    body: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int], gaps: list[int],
    idle_timeout: int, line_timeout: int,
) -> None:
    """The session's clocks and timeout decisions do not depend on which path split
    the lines: the same idle and slow closes, at the same chunk, on both."""
    stream = b"".join(word + end for word, end in body) + tail
    chunks = split(stream, cuts) or [b""]
    fast = run(chunks, LINE_READER, gaps, idle_timeout, line_timeout)
    assert fast == run(chunks, None, gaps, idle_timeout, line_timeout)


@needs_reader
def test_lines_after_an_awaitable_queue_behind_it_on_both_paths() -> None:
    chunks = [b"x\na1\nhi\n", b"n\nhi\n"]
    fast, pure = run(chunks, LINE_READER), run(chunks, None)
    assert fast == pure
    assert fast[0] == b"Welcome!\n<x>\nAa1\n<hi>\n<hi>\n"


@needs_reader
def test_line_reader_alone_counts_and_reports_the_partial_line() -> None:
    counters = Counters()
    written: list[bytes] = []
    peer = Peer(("127.0.0.1", 1), "tcp")
    reader = new_reader(handler, peer, counters, written.append)
    assert reader.feed(b"", b"hi\r\n\nn\nx") == (_native.LINES_DONE, 3, b"x", None)
    assert reader.feed(b"x", b"y\n") == (_native.LINES_DONE, 1, b"", None)
    assert written == [b"<hi>\nerror: empty request\n", b"<xy>\n"]
    snapshot = counters.snapshot()
    assert (snapshot.received, snapshot.replied, snapshot.no_reply, snapshot.dropped_empty) == (
        4, 2, 1, 1,
    )
    status, taken, rest, extra = reader.feed(b"", b"hi\nr\nhi\n")
    assert (status, taken, rest) == (_native.LINES_ERROR, 2, b"hi\n")
    assert isinstance(extra, ValueError)
    assert reader.feed(b"", b"x" * (MAX_LINE + 2)) == (_native.LINES_OVERSIZE, 0, b"", None)


@needs_reader
def test_a_limited_source_takes_tokens_in_grants_and_stops_at_the_line_without_one() -> None:
    """Empty lines and ``exit`` take no token (as on the pure path); a grant of 2
    serves two lines; a grant of 0 leaves that line, and the rest, to Python."""
    grants = [2, 0]
    asked: list[tuple[str, float, int]] = []

    def take(host: str, now: float, want: int) -> int:
        asked.append((host, now, want))
        return grants.pop(0)

    counters = Counters()
    written: list[bytes] = []
    peer = Peer(("192.0.2.7", 1), "tcp")
    reader = new_reader(handler, peer, counters, written.append, None, take)
    assert reader.feed(b"", b"\nhi\nho\nhe\nhu\n") == (
        _native.LINES_LIMITED, 3, b"he\nhu\n", None,
    )
    assert written == [b"error: empty request\n<hi>\n<ho>\n"]
    want = TOKENS_PER_GRANT
    assert [(host, w) for host, _, w in asked] == [("192.0.2.7", want), ("192.0.2.7", want)]
    snapshot = counters.snapshot()
    assert (snapshot.received, snapshot.replied, snapshot.dropped_empty) == (3, 2, 1)
    grants.append(0)
    assert reader.feed(b"", b"exit\n")[0] == _native.LINES_EXIT  # no token asked for
    assert len(asked) == 2


@pytest.mark.parametrize("reader", [None, LINE_READER], ids=["pure", "reader"])
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit])
def test_a_base_exception_from_the_handler_is_a_counted_handler_error(
    reader: object, raised: type[BaseException]
) -> None:
    """KeyboardInterrupt or SystemExit raised by a handler is that handler's failure,
    alike on both paths (issue 16, item 7: it used to escape data_received, and the
    request was never counted); Ctrl-C reaches the server as a signal, not this way."""
    if reader is None and LINE_READER is None:
        pytest.skip("the C line reader is not built")

    def interrupted(request: bytes, peer: Peer) -> bytes:
        if request == b"x":
            raise raised
        return b"Hello, " + request + b"!"

    async def go() -> tuple[list[bytes], Counters]:
        connection, transport, counters, registry = open_connection(
            reader, handler=interrupted)  # type: ignore[arg-type]
        connection.data_received(b"x\ny\n")
        registry.close()
        return transport.written, counters

    written, counters = asyncio.run(go())
    assert b"".join(written) == b"Welcome!\nerror: handler failed\nHello, y!\n"
    assert (counters.received, counters.handler_errors, counters.replied) == (2, 1, 1)


@needs_reader
def test_a_slow_line_and_an_idle_client_close_alike_on_both_paths() -> None:
    """One close of each kind by the sweep, at the same point of the stream."""
    slow = [b"hi\n", b"pa", b"r", b"t\n"]
    fast = run(slow, LINE_READER, [2], idle_timeout=9, line_timeout=3)
    assert fast == run(slow, None, [2], idle_timeout=9, line_timeout=3)
    assert fast[0] == b"Welcome!\n<hi>\n"  # "part" never ends in time
    assert (fast[1].closed_slow, fast[1].closed_idle, fast[2]) == (1, 0, True)
    idle = [b"hi\n", b"ho\n", b"hu\n"]
    fast = run(idle, LINE_READER, [1, 5], idle_timeout=4, line_timeout=3)
    assert fast == run(idle, None, [1, 5], idle_timeout=4, line_timeout=3)
    assert fast[0] == b"Welcome!\n<hi>\n"
    assert (fast[1].closed_slow, fast[1].closed_idle) == (0, 1)


@pytest.mark.parametrize("fast", [False, True], ids=["pure", "reader"])
def test_lines_received_but_waiting_for_their_turn_are_answered_at_shutdown(fast: bool) -> None:
    """A chunk larger than a turn is handled over several loop iterations (issue 16,
    item 11); a stop between them must still answer every line received, as it did
    when the whole chunk was handled at once."""
    reader = LINE_READER if fast else None
    if fast and reader is None:
        pytest.skip("C extension not built")

    async def go() -> tuple[bytes, CounterSnapshot]:
        connection, transport, counters, registry = open_connection(reader)
        connection.data_received(b"".join(b"x%04d\n" % i for i in range(1000)))  # 6 turns
        assert connection.session.backlog  # the rest waits for its turns
        connection.stop_reading()
        await asyncio.sleep(0)
        connection.connection_lost(None)
        registry.close()
        return b"".join(transport.written), counters.snapshot()

    written, counters = asyncio.run(go())
    assert written == b"Welcome!\n" + b"".join(b"<x%04d>\n" % i for i in range(1000))
    assert (counters.received, counters.replied) == (1000, 1000)


# -- len16 ------------------------------------------------------------------------------


def len16(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(LEN16_PREFIX, "big") + m for m in messages)


LEN16_WORDS = [*WORDS, b"L", b"a\nb", b"\r\n"]
LEN16_TAILS = [b"", b"\x00", b"\x00\x04pa", b"\x00\x07", b"\x00\x07xx", b"\xff\xff"]


@needs_reader
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.sampled_from(LEN16_WORDS), max_size=20),
    tail=st.sampled_from(LEN16_TAILS),
    sync_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_len16_any_split_of_any_stream_gives_the_same_result_on_both_paths(
    words: list[bytes], tail: bytes, sync_only: bool, cuts: list[int]
) -> None:
    words = [w if not (sync_only and w[:1] == b"a") else b"s" + w for w in words]
    chunks = split(len16(*words) + tail, cuts) or [b""]
    assert LINE_READER is not None
    assert run(chunks, LINE_READER, framing="len16") == run(chunks, None, framing="len16")


@needs_reader
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.binary(max_size=120), cuts=st.lists(st.integers(0, 120), max_size=8))
def test_len16_arbitrary_bytes_give_the_same_result_on_both_paths(
    stream: bytes, cuts: list[int]
) -> None:
    """Hostile bytes, not a well-formed stream: whatever lengths they announce, both
    paths frame, answer, count and close alike."""
    chunks = split(stream, cuts) or [b""]
    assert run(chunks, LINE_READER, framing="len16") == run(chunks, None, framing="len16")


@needs_reader
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.sampled_from(LEN16_WORDS), max_size=20),
    tail=st.sampled_from(LEN16_TAILS),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    gaps=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=8),
    idle_timeout=st.integers(min_value=1, max_value=12),
    line_timeout=st.integers(min_value=1, max_value=6),
)
def test_len16_any_timing_gives_the_same_timeouts_and_clocks_on_both_paths(
    words: list[bytes], tail: bytes, cuts: list[int], gaps: list[int], idle_timeout: int,
    line_timeout: int,
) -> None:
    chunks = split(len16(*words) + tail, cuts) or [b""]
    fast = run(chunks, LINE_READER, gaps, idle_timeout, line_timeout, "len16")
    assert fast == run(chunks, None, gaps, idle_timeout, line_timeout, "len16")


@pytest.mark.parametrize("fast", [False, True], ids=["pure", "reader"])
def test_len16_pipelined_requests_are_answered_in_order_framed_alike(fast: bool) -> None:
    """No welcome; ``exit`` is a request like any; async replies keep their place; a
    reply too long for the prefix is the handler's error; an empty message is answered,
    counted, and closes: what follows it is not read."""
    if fast and LINE_READER is None:
        pytest.skip("C extension not built")
    stream = len16(b"x", b"a1", b"exit", b"n", b"L", b"hi", b"", b"after")
    written, counters, closed, _ = run([stream], LINE_READER if fast else None, framing="len16")
    assert written == len16(
        b"<x>", b"Aa1", b"<exit>", b"error: handler failed", b"<hi>", b"error: empty request"
    )
    assert (counters.received, counters.replied, counters.no_reply, counters.handler_errors,
            counters.dropped_empty) == (7, 4, 1, 1, 1)
    assert closed


@pytest.mark.parametrize("fast", [False, True], ids=["pure", "reader"])
def test_len16_length_over_the_limit_is_answered_counted_and_closes(fast: bool) -> None:
    """The prefix alone decides: the announced bytes are never awaited."""
    if fast and LINE_READER is None:
        pytest.skip("C extension not built")
    stream = len16(b"hi") + (MAX_LINE + 1).to_bytes(2, "big")
    written, counters, closed, _ = run([stream], LINE_READER if fast else None, framing="len16")
    assert written == len16(b"<hi>", b"error: request too long")
    assert (counters.received, counters.replied, counters.dropped_oversize) == (2, 1, 1)
    assert closed


@needs_reader
def test_a_slow_len16_prefix_closes_alike_on_both_paths() -> None:
    """A slowloris on the length prefix: one byte of it, then nothing, runs the line
    clock as a partial line does."""
    slow = [len16(b"hi"), b"\x00", b"\x02", b"hi"]
    fast = run(slow, LINE_READER, [2], idle_timeout=9, line_timeout=3, framing="len16")
    assert fast == run(slow, None, [2], idle_timeout=9, line_timeout=3, framing="len16")
    assert fast[0] == len16(b"<hi>")
    assert (fast[1].closed_slow, fast[2]) == (1, True)


@needs_reader
def test_line_reader_alone_splits_len16() -> None:
    counters = Counters()
    written: list[bytes] = []
    peer = Peer(("127.0.0.1", 1), "tcp")
    assert LINE_READER is not None
    reader = LINE_READER(
        handler, peer, counters, written.append,  # type: ignore[arg-type]  # wrong results
        max_line=MAX_LINE, exit_line=None,
        empty_reply=None, grant=TOKENS_PER_GRANT, length_prefix=LEN16_PREFIX,
    )
    assert reader.feed(b"", len16(b"hi", b"exit", b"n") + b"\x00\x02x") == (
        _native.LINES_DONE, 3, b"\x00\x02x", None,
    )
    assert reader.feed(b"\x00\x02x", b"y" + len16(b"", b"hi")) == (
        _native.LINES_EMPTY, 1, len16(b"", b"hi"), None,
    )
    assert written == [len16(b"<hi>", b"<exit>"), len16(b"<xy>")]
    status, taken, rest, extra = reader.feed(b"", len16(b"L", b"hi"))
    assert (status, taken, rest, extra) == (_native.LINES_RESULT, 1, len16(b"hi"),
                                            TOO_LONG_FOR_LEN16)
    assert reader.feed(b"", b"\x00\x07") == (_native.LINES_OVERSIZE, 0, b"", None)
    snapshot = counters.snapshot()
    assert (snapshot.received, snapshot.replied, snapshot.no_reply, snapshot.dropped_empty) == (
        5, 3, 1, 0,
    )
    with pytest.raises(ValueError, match="length_prefix"):
        LINE_READER(mixed_handler, peer, counters, written.append,  # type: ignore[arg-type]
                    max_line=1, exit_line=None, empty_reply=None, grant=1, length_prefix=5)


@pytest.mark.parametrize("fast", [False, True], ids=["pure", "reader"])
def test_len16_messages_beyond_a_turn_wait_for_the_next_and_are_answered_at_shutdown(
    fast: bool,
) -> None:
    """A chunk larger than a turn (1 KiB) is cut anywhere, inside a prefix or a message,
    and handled over several turns; a stop between them answers every message."""
    reader = LINE_READER if fast else None
    if fast and reader is None:
        pytest.skip("C extension not built")

    async def go() -> tuple[bytes, CounterSnapshot, list[int]]:
        connection, transport, counters, registry = open_connection(reader, "len16")
        connection.data_received(len16(*(b"x%04d" % i for i in range(1000))))  # 7 turns
        session = connection.session
        turns = [len(session.unhandled)]
        connection.data_received(b"")  # the next turn, as the loop would give it
        turns.append(len(session.unhandled))
        connection.stop_reading()
        await asyncio.sleep(0)
        connection.connection_lost(None)
        registry.close()
        return b"".join(transport.written), counters.snapshot(), turns

    written, counters, turns = asyncio.run(go())
    assert written == len16(*(b"<x%04d>" % i for i in range(1000)))
    assert (counters.received, counters.replied) == (1000, 1000)
    assert turns == [7000 - 1024, 7000 - 2048]
