"""TCP glue: one :class:`TcpConnection` protocol per client.

Rule: framing is the sans-IO :mod:`udpkit.core.framing`; this module only
feeds it and writes replies, in request order.  Sync handlers answer inline;
once an async handler is pending, later replies queue behind it so order is
kept.  A client that does not read its replies is paused (``pause_writing``
pauses reading), so one slow or silent client never holds anyone else up.

:class:`ConnectionRegistry` owns what is shared by all connections: the total
and per-source caps, and one periodic sweep that closes connections past the
idle, line or write timeout (one timer for all, not one per connection).

Line framing has a fast path: ``udpkit._fastpath.LineReader`` splits a
received chunk, calls the sync handler per line and writes the replies in C,
while a connection is in the simple state (no async reply pending, no access
log).  Whatever is unusual (an awaitable or non-bytes result, an exception,
``exit``, a line over the limit) comes back to the Python code here at the
line where it happened, so both paths count and answer alike.  A source
under a rate limit takes its tokens in C too, in grants of 16 from
``Admission.take``; a line that gets none comes back the same way, and
Python answers it and the rest of its chunk as the pure path does.
``fast_path=False`` or ``UDPKIT_NO_FASTPATH=1`` turn it off.

With the line reader, ``udpkit._fastpath.LinePoller`` also does the reading:
a connection in the simple state is taken off its transport (reading paused,
the socket stays the transport's) and read, answered and written from one C
epoll set, one event-loop callback for all ready connections.  At the first
thing that is not a plain read, handle and send, the poller hands it back
(:meth:`TcpConnection._from_poller`) and the code above deals with it; a
connection that is simple again goes back to the poller (:meth:`_poll`).
Closing paths take it off the poller first (:meth:`_unpoll`), so the poller
never touches a socket the transport has closed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from udpkit.core.admission import Admission
from udpkit.core.counters import Counters
from udpkit.core.errors import BadInput
from udpkit.core.framing import EXIT, Framing, LineFraming, error_message
from udpkit.core.handler import Handler, Peer, Reply
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.proxy_protocol import NEEDS_MORE, ProxyPolicy, parse_untrusted
from udpkit.server import udp as _udp_glue
from udpkit.server.dispatch import check_reply, is_awaitable, log_handler_error
from udpkit.server.logs import log_abuse, log_access

_CLOSE = object()
"""Queue marker: close the connection once everything before it is written."""

ERR_EMPTY = error_message("empty request")
ERR_TOO_LONG = error_message("request too long")
ERR_HANDLER = error_message("handler failed")
ERR_RATE_LIMITED = error_message("rate limited")
BUSY = b"busy"

class LineReader(Protocol):
    """``udpkit._fastpath.LineReader``: one connection's line framing in C (see its docs)."""

    def feed(self, data: bytes, /) -> int: ...

    def unusual(self) -> tuple[int, bytes, int, object]: ...

    @property
    def polled(self) -> int: ...

    @property
    def last_request(self) -> float: ...

    @property
    def line_started(self) -> float: ...


class LinePoller(Protocol):
    """``udpkit._fastpath.LinePoller``: connections read from one epoll set in C."""

    def add(
        self, reader: LineReader, fd: int, owner: TcpConnection, last_request: float,
        line_started: float, /,
    ) -> None: ...

    def remove(self, reader: LineReader, /) -> bool: ...

    def poll(self) -> None: ...

    def fileno(self) -> int: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


LineReaderType = Callable[
    [
        Handler,
        Peer,
        Counters,
        LineFraming,
        Callable[[bytes], object],
        Callable[[float], None] | None,  # latency.observe
        Callable[[str, float, int], int] | None,  # admission.take, for a limited source
    ],
    LineReader,
]
# What LineReader.feed returns: bits when all complete lines were handled, or -status.
LINES_TAKEN, PARTIAL_LEFT = 2, 1
LINES_EXIT, LINES_OVERSIZE, LINES_RESULT, LINES_ERROR, LINES_LIMITED = 1, 2, 3, 4, 5
LinePollerType = Callable[[Counters, Callable[[float], None] | None], LinePoller]
# Why LinePoller hands a connection back (see _from_poller).
HAND_CLOSED, HAND_BLOCKED, HAND_UNUSUAL, HAND_FAILED = 1, 2, 3, 4

TCP_FAST_PATH_NAME = "line splitting in C (C extension)"
TCP_POLLER_NAME = "connections read from one epoll set, lines split in C (C extension)"

_monotonic = time.monotonic


def tcp_fast_path(
    handler: Handler, *, framing: str, enabled: bool = True, access_log: bool = False
) -> tuple[LineReaderType | None, str]:
    """The C line reader type for TCP, or ``None`` and why it cannot serve here."""
    refusal = _udp_glue.fast_path_refusal(handler, enabled=enabled, access_log=access_log)
    if refusal:
        return None, refusal
    if framing != "line":
        return None, f"{framing} framing"
    reader: LineReaderType | None = getattr(_udp_glue._fastpath, "LineReader", None)
    if reader is None:
        return None, "C extension too old (no LineReader): rebuild it"
    return reader, ""


def tcp_line_poller() -> LinePollerType | None:
    """The C poller type that reads fast-path connections, or ``None`` (extension too
    old, or ``UDPKIT_NO_TCP_POLLER=1``, a switch for benchmarks and tests)."""
    if os.environ.get("UDPKIT_NO_TCP_POLLER", "") not in ("", "0"):
        return None
    poller: LinePollerType | None = getattr(_udp_glue._fastpath, "LinePoller", None)
    return poller


@dataclass(slots=True, kw_only=True)
class TcpSettings:
    """What every connection of one server shares."""

    handler: Handler
    counters: Counters
    pipeline: int
    access_log: bool
    admission: Admission | None
    max_connections: int
    max_per_source: int
    idle_timeout: float
    line_timeout: float
    write_timeout: float
    write_buffer: int
    latency: LatencyHistogram | None = None
    proxy: ProxyPolicy | None = None
    """PROXY protocol on: which peers must send the header first."""
    line_reader: LineReaderType | None = None
    """The C fast path for line framing (see :func:`tcp_fast_path`), or ``None``."""
    line_poller: LinePollerType | None = None
    """With ``line_reader``: the C poller that reads connections in the simple state
    (see :func:`tcp_line_poller`), or ``None``: the event loop reads every connection."""


class ConnectionRegistry:
    """The open connections: caps on admission, timeouts by periodic sweep."""

    def __init__(self, settings: TcpSettings) -> None:
        self.settings = settings
        self.connections: set[TcpConnection] = set()
        self._per_source: dict[object, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # The one C poller of these connections (see TcpConnection._poll), watched by the loop.
        self.poller: LinePoller | None = None
        if settings.line_poller is not None:
            observe = None if settings.latency is None else settings.latency.observe
            poller = settings.line_poller(settings.counters, observe)
            asyncio.get_running_loop().add_reader(poller.fileno(), poller.poll)
            self.poller = poller

    def unpoll(self, reader: LineReader) -> None:
        """Stop polling a connection (one that is closing, or taking reading back)."""
        if self.poller is not None:
            self.poller.remove(reader)

    def __len__(self) -> int:
        return len(self.connections)

    def hold(self, connection: TcpConnection) -> None:
        """Track a connection still awaiting its PROXY header: timeouts apply, caps later."""
        self.connections.add(connection)
        self._arm()

    def admit(self, connection: TcpConnection, host: str) -> str | None:
        """Register a new connection; return why it must be refused, or ``None``."""
        self.connections.discard(connection)  # held while its PROXY header came
        settings = self.settings
        admission = settings.admission
        key: object = host
        exempt = False
        if admission is not None:
            if not admission.permitted(host):
                return "denied"
            key, exempt = admission.source_key(host)
        if len(self.connections) >= settings.max_connections:
            return "busy"
        count = self._per_source.get(key, 0)
        if not exempt and count >= settings.max_per_source:
            return "busy"
        self._per_source[key] = count + 1
        connection.source_key = key
        self.connections.add(connection)
        self._arm()
        return None

    def release(self, connection: TcpConnection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            key = connection.source_key
            remaining = self._per_source.get(key, 1) - 1
            if remaining:
                self._per_source[key] = remaining
            else:
                self._per_source.pop(key, None)

    def _arm(self) -> None:
        if self._sweeper is None:
            settings = self.settings
            shortest = min(settings.idle_timeout, settings.line_timeout, settings.write_timeout)
            period = min(1.0, max(0.02, shortest / 4))
            self._sweeper = asyncio.get_running_loop().call_later(period, self._sweep, period)

    def _sweep(self, period: float) -> None:
        self._sweeper = None
        now = time.monotonic()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        if self.connections:
            self._sweeper = asyncio.get_running_loop().call_later(period, self._sweep, period)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        poller, self.poller = self.poller, None
        if poller is not None:
            asyncio.get_running_loop().remove_reader(poller.fileno())
            poller.close()


class TcpConnection(asyncio.Protocol):
    """One client connection: frames requests, answers them in order."""

    def __init__(
        self, settings: TcpSettings, framing: Framing, registry: ConnectionRegistry
    ) -> None:
        self.settings = settings
        self.handler = settings.handler
        self.counters = settings.counters
        self.framing = framing
        self.pipeline = settings.pipeline
        self.access_log = settings.access_log
        self.registry = registry
        self.source_key: object = None
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        # In request order: a Future (async handler), (wire, is_reply, arrived) or _CLOSE.
        self._queue: deque[object] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self._reading_paused_by: set[str] = set()
        self.closed = asyncio.get_running_loop().create_future()
        # Timeouts (monotonic seconds): last complete request, start of the
        # unfinished line, start of the current write stall.
        self._last_request = time.monotonic()
        self._line_started: float | None = None
        self._write_stalled: float | None = None
        self._arrived = 0.0  # when the bytes being handled were received
        # Replies to one received chunk, written with one write (one send, not one a line).
        self._batch: list[bytes] | None = None
        self._admitted: Peer | None = None  # a peer no rate limit applies to: skip the check
        self._proxy_buffer: bytearray | None = None  # held until the PROXY header is parsed
        # The C line reader, once admitted, if this connection may use it.
        self._reader: LineReader | None = None
        self._feed_lines: Callable[[bytes], int] | None = None

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvloop's transports are not asyncio.Transport subclasses, only alike: no isinstance.
        self.transport = transport
        self.peer = Peer(transport.get_extra_info("peername"), "tcp")
        self.counters.connections_opened += 1
        proxy = self.settings.proxy
        if proxy is not None and proxy.expects_header(self.peer.host):
            self._proxy_buffer = bytearray()
            self._line_started = time.monotonic()  # the header is due at once
            self.registry.hold(self)
            return
        self._admit()
        if self._reader is not None:
            # Not now: uvloop starts reading after connection_made returns, paused or not.
            asyncio.get_running_loop().call_soon(self._poll)

    def _admit(self) -> None:
        """Apply the access lists and caps to ``self.peer``; welcome it or refuse it."""
        transport = self.transport
        assert self.peer is not None
        assert transport is not None
        refused = self.registry.admit(self, self.peer.host)
        if refused is not None:
            self._closing = True
            if refused == "denied":
                self.counters.connections_denied += 1
                log_abuse("denied", self.peer, time.monotonic())
                transport.abort()
            else:
                self.counters.connections_rejected += 1
                log_abuse("busy", self.peer, time.monotonic())
                transport.write(self.framing.frame(BUSY))
                transport.close()
            return
        settings = self.settings
        admission = settings.admission
        limited = admission is not None and admission.constant_verdict(self.peer.host) is None
        if not limited:
            self._admitted = self.peer  # never rate limited: no check per request
        framing = self.framing
        if settings.line_reader is not None and isinstance(framing, LineFraming):
            # A limited source's lines take tokens in C, in grants (admission.take).
            take = admission.take if limited and admission is not None else None
            observe = None if settings.latency is None else settings.latency.observe
            self._reader = settings.line_reader(
                self.handler, self.peer, self.counters, framing, transport.write, observe, take
            )
            self._feed_lines = self._reader.feed
        transport.set_write_buffer_limits(high=self.settings.write_buffer)
        transport.write(self.framing.welcome)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._proxy_buffer is not None:
            data = self._take_proxy_header(data)
            if not data or self._closing:
                return
        now = self._arrived = _monotonic()
        feed_lines = self._feed_lines
        if feed_lines is None or self._queue:
            self._receive(data, now, handled=False)
            return
        # The C path: every line of the chunk in one call, the replies in one write.
        done = feed_lines(data)
        if done < 0:
            self._receive_unusual(now)
        elif done & LINES_TAKEN:
            self._last_request = now
            self._line_started = now if done & PARTIAL_LEFT else None
        elif not done:
            self._line_started = None
        elif self._line_started is None:
            self._line_started = now
        self._poll()

    def _receive(self, data: bytes, now: float, *, handled: bool) -> None:
        """The pure-Python path: frame ``data``, handle each message in order.

        ``handled``: the fast path already took requests from this chunk."""
        framing = self.framing
        messages = framing.feed(data)
        if len(messages) > 1:
            self._batch = []
        try:
            handle = self._handle
            for message in messages:
                if message == EXIT:
                    self._flush_batch()
                    self._close_after_replies()
                    return
                handle(message, now)
        finally:
            self._flush_batch()
        if messages or handled:
            self._last_request = now
        if framing.pending():
            if messages or handled or self._line_started is None:
                self._line_started = now
        else:
            self._line_started = None
        if framing.too_long:
            self._too_long()

    def _receive_unusual(self, now: float) -> None:
        """The C path stopped at a line it leaves to Python: do with it what the pure
        path does, then go on with the lines after it."""
        reader = self._reader
        feed_lines = self._feed_lines
        assert reader is not None
        assert feed_lines is not None
        handled = False
        while True:
            status, rest, count, extra = reader.unusual()
            handled = handled or count > 0
            if status == LINES_EXIT:
                self._close_after_replies()
                return
            if status == LINES_OVERSIZE:
                self.framing.too_long = True
                break
            if status == LINES_LIMITED:  # over the rate limit: this chunk's rest as the pure path
                self._receive(rest, now, handled=handled)
                return
            if status == LINES_ERROR:
                if not isinstance(extra, Exception):
                    raise extra  # type: ignore[misc]  # KeyboardInterrupt, SystemExit
                self._handler_failed(extra)
            else:
                self._handle_result(extra)
            if self._queue:  # an async reply is pending: later ones queue behind it
                self._receive(rest, now, handled=True)
                return
            done = feed_lines(rest)
            if done >= 0:
                handled = handled or done & LINES_TAKEN != 0
                break
        if handled:
            self._last_request = now
        if self.framing.pending():
            if handled or self._line_started is None:
                self._line_started = now
        else:
            self._line_started = None
        if self.framing.too_long:
            self._too_long()

    # -- the C poller ---------------------------------------------------------

    @property
    def _polled(self) -> bool:
        """Whether the registry's LinePoller reads this connection, not the transport."""
        reader = self._reader
        return reader is not None and bool(reader.polled)

    def _poll(self) -> None:
        """Let the registry's C poller read this connection while it is in the simple
        state: C line reader, nothing queued or waiting to be written, reading not
        paused for any reason.  It hands the connection back (:meth:`_from_poller`)
        at the first thing that is not a plain read, handle and send."""
        reader = self._reader
        transport = self.transport
        poller = self.registry.poller
        if (
            reader is None
            or poller is None
            or self._polled
            or self._closing
            or self._queue
            or self._reading_paused_by
            or transport is None
            or transport.get_write_buffer_size()
        ):
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        self._pause_reading("poller")
        line_started = -1.0 if self._line_started is None else self._line_started
        poller.add(reader, sock.fileno(), self, self._last_request, line_started)

    def _take_poller_times(self) -> None:
        reader = self._reader
        assert reader is not None
        if reader.last_request >= 0:
            self._last_request = reader.last_request
        self._line_started = None if reader.line_started < 0 else reader.line_started

    def _unpoll(self, *, resume: bool) -> None:
        """Take reading back from the poller (``resume``: hand it to the transport)."""
        if not self._polled:
            return
        assert self._reader is not None
        self.registry.unpoll(self._reader)
        self._take_poller_times()
        if resume:
            self._resume_reading("poller")
        else:
            self._reading_paused_by.discard("poller")

    def _from_poller(self, kind: int, unsent: bytes) -> None:
        """The poller let go of this connection (see ``LinePoller.add``): finish what it
        could not, then read through the transport again."""
        self._take_poller_times()
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # closed while a handler ran: its replies cannot go out
            return
        if unsent:
            transport.write(unsent)
        if kind == HAND_UNUSUAL:
            self._arrived = now = _monotonic()
            self._receive_unusual(now)
        elif kind == HAND_FAILED:  # reported as unraisable by the poller
            self._closing = True
            transport.abort()
            return
        self._resume_reading("poller")

    def _too_long(self) -> None:
        counters = self.counters
        counters.received += 1
        counters.dropped_oversize += 1
        self._write(self.framing.frame(ERR_TOO_LONG), is_reply=False)
        self._close_after_replies()

    def _take_proxy_header(self, data: bytes) -> bytes:
        """Hold bytes until the PROXY header is whole; then the client it names is the
        peer.  Returns the bytes after the header (the relayed stream)."""
        buffer = self._proxy_buffer
        assert buffer is not None
        assert self.peer is not None
        assert self.transport is not None
        buffer += data
        proxy = self.settings.proxy
        assert proxy is not None
        try:
            parsed = parse_untrusted(buffer, limit=proxy.limit)
        except BadInput:
            self._proxy_buffer = None
            self.counters.closed_bad_proxy += 1
            self._give_up("bad_proxy")
            return b""
        if parsed is NEEDS_MORE:
            return b""
        header, consumed = parsed
        self._proxy_buffer = None
        self._line_started = None
        if header.source is not None:
            self.peer = Peer(header.source, "tcp")
        self._admit()
        return bytes(buffer[consumed:])

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what it sent, then close.
        self._close_after_replies()
        return True  # keep the write side open until the replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self._unpoll(resume=False)
        self._closing = True
        if self._drainer is not None:
            self._drainer.cancel()
        for item in self._queue:  # replies that can no longer be written
            if isinstance(item, asyncio.Future):
                item.cancel()
                self.counters.send_errors += 1
            elif isinstance(item, tuple) and item[1]:
                self.counters.send_errors += 1
        self._queue.clear()
        self.counters.connections_closed += 1
        if not self.closed.done():
            self.closed.set_result(None)
        self.registry.release(self)

    def pause_writing(self) -> None:
        self._write_stalled = time.monotonic()
        self._pause_reading("writing")

    def resume_writing(self) -> None:
        self._write_stalled = None
        self._resume_reading("writing")

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it is past a timeout (called by the registry's sweep)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._polled:
            self._take_poller_times()
        settings = self.settings
        counters = self.counters
        if self._write_stalled is not None:
            if now - self._write_stalled > settings.write_timeout:
                counters.closed_write_timeout += 1
                self._give_up("write_timeout")
            return
        if self._line_started is not None and now - self._line_started > settings.line_timeout:
            counters.closed_slow += 1
            self._give_up("slow")
        elif now - self._last_request > settings.idle_timeout and not self._queue:
            counters.closed_idle += 1
            self._give_up("idle")

    def _give_up(self, reason: str) -> None:
        assert self.peer is not None
        assert self.transport is not None
        log_abuse(reason, self.peer, time.monotonic())
        self._unpoll(resume=False)
        self._closing = True
        self.transport.abort()

    # -- life cycle used by the server ----------------------------------------

    def stop_reading(self) -> None:
        """Take no new requests; the ones received are still answered."""
        self._unpoll(resume=False)
        self._pause_reading("shutdown")
        self._close_after_replies()

    def abort(self) -> None:
        self._unpoll(resume=False)
        if self.transport is not None:
            self.transport.abort()

    # -- requests -------------------------------------------------------------

    def _handle(self, message: bytes, now: float) -> None:
        counters = self.counters
        counters.received += 1
        peer = self.peer
        assert peer is not None
        if not message:
            counters.dropped_empty += 1
            self._write(self.framing.frame(ERR_EMPTY), is_reply=False)
            return
        if self._admitted is not peer:  # a rate-limited source (see _admit)
            admission = self.settings.admission
            if admission is not None and admission.check(peer.host, now) is not None:
                counters.dropped_rate_limited += 1  # denied sources were refused at connect
                log_abuse("rate_limited", peer, now)
                self._write(self.framing.frame(ERR_RATE_LIMITED), is_reply=False)
                return
        if self.access_log:
            log_access(peer, message)
        try:
            result = self.handler(message, peer)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if type(result) is bytes:
            self._write(self.framing.frame(result), is_reply=True)
        elif result is None:
            counters.no_reply += 1
        else:
            self._handle_result(result)

    def _handle_result(self, result: object) -> None:
        """A handler result that is neither bytes nor ``None``: an awaitable, a bytes-like
        object (taken as bytes) or a wrong type (the handler's error)."""
        peer = self.peer
        assert peer is not None
        try:
            if is_awaitable(result):
                self._queue_pending(result)  # type: ignore[arg-type]
                return
            reply = check_reply(result, peer)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if reply is None:
            self.counters.no_reply += 1
        else:
            self._write(self.framing.frame(reply), is_reply=True)

    def _handler_failed(self, exc: Exception) -> None:
        assert self.peer is not None
        self.counters.handler_errors += 1
        log_handler_error(self.peer, exc)
        self._write(self.framing.frame(ERR_HANDLER), is_reply=False)

    def _write(self, wire: bytes, *, is_reply: bool) -> None:
        """Write now, or behind pending async replies; count a reply once written."""
        if self._queue:
            self._queue.append((wire, is_reply, self._arrived))
        elif self.transport is not None:
            if self._batch is not None:
                self._batch.append(wire)
            else:
                self.transport.write(wire)
            if is_reply:
                self.counters.replied += 1
                if self.settings.latency is not None:
                    self.settings.latency.observe(time.monotonic() - self._arrived)

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self.transport is not None:
            self.transport.write(b"".join(batch))

    def _queue_pending(self, pending: Awaitable[Reply]) -> None:
        future = asyncio.ensure_future(pending)
        self._queue.append(future)
        if self.settings.latency is not None:
            arrived = self._arrived
            latency = self.settings.latency
            future.add_done_callback(lambda _: latency.observe(time.monotonic() - arrived))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if len(self._queue) >= self.pipeline:
            self._pause_reading("pipeline")

    def _close_after_replies(self) -> None:
        if self._closing:
            return
        self._unpoll(resume=False)
        self._closing = True
        self._pause_reading("closing")
        if self._queue:
            self._queue.append(_CLOSE)
        elif self.transport is not None:
            self.transport.close()

    async def _drain(self) -> None:
        """Write queued replies in request order, awaiting async handlers."""
        queue = self._queue
        counters = self.counters
        peer = self.peer
        assert peer is not None
        assert self.transport is not None
        while queue:
            item = queue[0]
            if item is _CLOSE:
                queue.clear()
                self.transport.close()
                break
            if isinstance(item, asyncio.Future):
                try:
                    reply = check_reply(await item, peer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    counters.handler_errors += 1
                    log_handler_error(peer, exc)
                    wire: bytes | None = self.framing.frame(ERR_HANDLER)
                    is_reply = False
                else:
                    if reply is None:
                        counters.no_reply += 1
                    wire = None if reply is None else self.framing.frame(reply)
                    is_reply = True
            else:
                assert isinstance(item, tuple)
                wire, is_reply, arrived = item
                if is_reply and self.settings.latency is not None:
                    self.settings.latency.observe(time.monotonic() - arrived)
            queue.popleft()
            if wire is not None:
                self.transport.write(wire)
                if is_reply:
                    counters.replied += 1
            if len(queue) < self.pipeline // 2:
                self._resume_reading("pipeline")
        self._drainer = None

    # -- flow control ---------------------------------------------------------

    def _pause_reading(self, reason: str) -> None:
        transport = self.transport
        if not self._reading_paused_by and transport is not None and not transport.is_closing():
            transport.pause_reading()
        self._reading_paused_by.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._reading_paused_by:
            return
        self._reading_paused_by.discard(reason)
        transport = self.transport
        if not self._reading_paused_by and transport is not None and not transport.is_closing():
            transport.resume_reading()
