"""TCP glue: one :class:`TcpConnection` protocol per client, on asyncio.

Rule: a connection's state and rules are its :class:`TcpSession`'s
(:mod:`udpkit.core.tcp_session`); this module only feeds it what the transport
reports, calls the handler and does what the session decides.  Replies go out
in request order (:mod:`udpkit.server.tcp_replies`): sync handlers answer
inline; once an async handler is pending, later replies queue behind it.  A
client that does not read its replies is paused (``pause_writing`` pauses
reading), so one slow client never holds up another; one greedy client has
its session's turn of bytes handled per loop iteration, the rest of what it
sent waits for its next turn (``call_soon``) with reading paused, and a line
over its rate pauses reading until the session's ``refill_at``.

What all connections share (caps, the sweep, the C poller) is the
:class:`ConnectionRegistry`'s (:mod:`udpkit.server.tcp_registry`).

Line and len16 framing have a C fast path (:mod:`udpkit._native`): ``LineReader.feed``
splits a chunk, calls the sync handler per message, writes the replies and
returns one report; at a message it leaves to Python (an awaitable or other
result, an exception, ``exit``, one over the limit, a rate-limited one, an
empty len16 message)
:meth:`TcpConnection.after_stop` answers it as the pure path does.  With the
C ``LinePoller`` the reading is done in C too (:mod:`udpkit.server.tcp_poller`).
``fast_path=False`` or ``UDPKIT_NO_FASTPATH=1`` turn it off.
"""

from __future__ import annotations

import asyncio

from udpkit import _native
from udpkit._native import LINES_DONE
from udpkit.core.admission import TOKENS_PER_GRANT
from udpkit.core.errors import BadInput
from udpkit.core.framing import Framing, StreamFraming
from udpkit.core.handler import Peer
from udpkit.core.proxy_protocol import NEEDS_MORE, parse_untrusted
from udpkit.core.tcp_session import (
    BUSY,
    ERR_EMPTY,
    Line,
    Paused,
    TcpSession,
)
from udpkit.server.logs import log_abuse
from udpkit.server.tcp_ledger import WriteLedger, server_lines
from udpkit.server.tcp_poller import TCP_POLLER_NAME, PollerHandoff
from udpkit.server.tcp_registry import (
    TCP_FAST_PATH_NAME,
    ConnectionRegistry,
    TcpSettings,
    peer_address,
    tcp_fast_path,
    tcp_line_poller,
)
from udpkit.server.tcp_replies import OrderedReplies
from udpkit.server.tcp_requests import TcpRequests
from udpkit.server.tcp_turns import TurnScheduler

__all__ = [
    "TCP_FAST_PATH_NAME", "TCP_POLLER_NAME", "ConnectionRegistry", "TcpConnection", "TcpSettings",
    "tcp_fast_path", "tcp_line_poller",
]

_PYTHON_JUDGES = frozenset([_native.LINES_LIMITED, _native.LINES_EMPTY])
"""C stopped at a message the pure path judges (rate limited, an empty one that closes):
``rest`` starts with it."""


class TcpConnection(asyncio.Protocol):
    """One client connection: feeds its session, answers in order."""

    def __init__(
        self, settings: TcpSettings, framing: Framing, registry: ConnectionRegistry
    ) -> None:
        self.settings = settings
        self.handler = settings.handler
        self.counters = settings.counters
        self.registry = registry
        self.clock = settings.clock
        self.session = TcpSession(framing, registry.limits, settings.counters, now=self.clock())
        self.source_key: object = None
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.replies = OrderedReplies(self)
        self.ledger = WriteLedger(server_lines(framing), framing.prefix)
        """The replies the transport still holds (``replied`` means handed to the kernel)."""
        self.arrived = 0.0
        """When the bytes being handled were received (their replies' latency)."""
        self.requests = TcpRequests(self)
        self._proxy_buffer: bytearray | None = None  # held until the PROXY header is parsed
        self.reader: _native.LineReader | None = None
        """The C line reader, once admitted, if this connection may use it."""
        self.handoff: PollerHandoff | None = None
        """Its seat at the registry's C poller, if there is one."""
        self.turns = TurnScheduler(self)
        """The backlog's next turn and the end of a rate pause, when scheduled."""

    @property
    def polled(self) -> bool:
        """Whether the registry's C poller reads this connection, not the transport."""
        return bool(self.session.paused & Paused.POLLER)

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvloop's transports are not asyncio.Transport subclasses, only alike: no isinstance.
        self.transport = transport
        self.counters.connections_opened += 1
        address = peer_address(transport)
        if address is None:  # reset between the kernel's accept and now: nobody to serve
            self.session.abort()
            transport.abort()  # connection_lost follows, and counts the close
            return
        self.peer = Peer(address, "tcp")
        proxy = self.settings.proxy
        if proxy is not None and proxy.expects_header(self.peer.host):
            self._proxy_buffer = bytearray()
            self.session.awaiting_header(self.clock())  # the header is due at once
            self.registry.hold(self)
            return
        self._admit()
        if self.handoff is not None:
            # Not now: uvloop starts reading after connection_made returns, paused or not.
            asyncio.get_running_loop().call_soon(self.handoff.poll)

    def _admit(self) -> None:
        """Apply the access lists and caps to ``self.peer``; welcome it or refuse it."""
        transport, peer, session, settings = self.transport, self.peer, self.session, self.settings
        assert peer is not None
        assert transport is not None
        refused = self.registry.admit(self, peer.host)
        if refused is not None:
            session.abort()
            log_abuse(refused, peer, self.clock())
            if refused == "denied":
                self.counters.connections_denied += 1
                transport.abort()
            else:
                self.counters.connections_rejected += 1
                transport.write(session.framing.frame(BUSY))
                transport.close()
            return
        session.admitted(peer.host, settings.admission)
        framing = session.framing
        if settings.line_reader is not None and isinstance(framing, StreamFraming):
            admission = settings.admission
            self.reader = settings.line_reader(
                self.handler, peer, self.counters, transport.write,
                None if settings.latency is None else settings.latency.observe,
                # A limited source's lines take tokens in C, in grants.
                admission.take if session.rate_limited and admission is not None else None,
                max_line=framing.max_line, exit_line=framing.exit,
                empty_reply=None if framing.empty_closes else framing.frame(ERR_EMPTY),
                grant=TOKENS_PER_GRANT,
                length_prefix=framing.prefix,
                # A write the transport holds is kept in the ledger (looked at in C).
                buffered=transport.get_write_buffer_size, kept=self.ledger.wrote,
            )
            if self.registry.poller is not None:
                self.handoff = PollerHandoff(self, self.registry.poller, self.reader)
        transport.set_write_buffer_limits(high=settings.write_buffer)
        if framing.welcome:
            transport.write(framing.welcome)

    def data_received(self, data: bytes) -> None:
        # Also the backlog's next turn (``data`` empty): see server/tcp_turns.py.
        session = self.session
        if session.closing:
            return
        if self._proxy_buffer is not None:
            data = self._take_proxy_header(data)
            if not data or session.closing:
                return
        if session.backlog or len(data) > session.limits.turn_bytes:
            data = session.take_turn(data)  # this turn's share; the rest waits
        now = self.arrived = self.clock()
        reader = self.reader
        if reader is None or session.pending:
            self._receive(data, now, 0)
            if session.backlog or session.paused:
                self.end_turn()
            return
        # The C path: every line of the chunk in one call, the replies in one write.
        try:
            status, taken, rest, extra = reader.feed(session.lend_partial(), data)
        except BaseException:
            session.partial_returned(b"")
            raise
        if status == LINES_DONE:
            session.lines_split(taken, rest, now)
        else:
            session.partial_returned(b"")
            self.after_stop(status, taken, rest, extra, now)
        if session.backlog or session.paused:
            self.end_turn()
        if self.handoff is not None:
            self.handoff.poll()

    def end_turn(self) -> None:
        self.turns.end_turn()

    def _receive(self, data: bytes, now: float, taken: int) -> None:
        """The pure-Python path: frame ``data``, handle each message in order
        (``taken``: requests the C path already took from this chunk)."""
        session = self.session
        messages = session.receive(data)
        first = taken
        if len(messages) > 1:
            self.replies.start_batch()
        try:
            for message in messages:
                verdict = session.judge(message, now)
                if verdict is Line.EXIT:
                    self.replies.flush_batch()
                    session.exit(taken, now)
                    self._close_after_replies()
                    return
                self.requests.handle(message, verdict, now)
                taken += 1
                if verdict is Line.EMPTY_CLOSE:  # answered; nothing after it counts
                    self.replies.flush_batch()
                    session.exit(taken, now)
                    self._close_after_replies()
                    return
                if verdict is Line.RATE_LIMITED:  # the rest waits for tokens
                    session.hold_back(messages[taken - first :])
                    self.turns.wait_for_tokens()
                    break
        finally:
            self.replies.flush_batch()
        session.lines_read(taken, session.framing.pending(), now)
        if session.too_long:
            self._too_long()

    def after_stop(self, status: int, taken: int, rest: bytes, extra: object, now: float) -> None:
        """The C path stopped at a line it leaves to Python (a :data:`_native.LinesReport`):
        do with it what the pure path does, then go on with the lines after it."""
        session, reader = self.session, self.reader
        assert reader is not None
        while True:
            if status == _native.LINES_EXIT:
                session.exit(taken, now)
                self._close_after_replies()
                return
            if status == _native.LINES_OVERSIZE:
                session.lines_read(taken, 0, now)
                self._too_long()
                return
            if status in _PYTHON_JUDGES:  # this chunk's rest as the pure path does
                self._receive(rest, now, taken)
                return
            if status == _native.LINES_ERROR:  # any exception, SystemExit included
                self.requests.handler_failed(extra)  # type: ignore[arg-type]
            else:
                self.requests.handle_result(extra)
            if session.pending:  # an async reply is pending: later ones queue behind it
                self._receive(rest, now, taken)
                return
            status, more, rest, extra = reader.feed(session.lend_partial(), rest)
            taken += more
            if status == LINES_DONE:
                session.lines_split(taken, rest, now)
                return
            session.partial_returned(b"")

    def write_lines(self, wire: bytes, lead: int = 0) -> None:
        """Write lines C framed (replies and its own error lines: what the poller's
        send() did not take; ``lead``: its bytes ending a message sent in part, known
        with a length prefix)."""
        transport = self.transport
        assert transport is not None
        transport.write(wire)
        held = transport.get_write_buffer_size()
        if held:
            self.ledger.wrote(held, wire, None, lead)

    def _discard(self, transport: asyncio.Transport, *, lost: bool = False) -> None:
        """The transport is about to throw away what it holds (``lost``: it has, and
        how much is known only from the last look): the replies in it are not replied
        but send errors."""
        discarded = self.ledger.discarded(None if lost else transport.get_write_buffer_size())
        if discarded:
            self.counters.replied -= discarded
            self.counters.send_errors += discarded

    def _too_long(self) -> None:
        self.write(self.session.oversize(), is_reply=False)
        self._close_after_replies()

    def _take_proxy_header(self, data: bytes) -> bytes:
        """Hold bytes until the PROXY header is whole; then the client it names is the
        peer.  Returns the bytes after the header (the relayed stream)."""
        buffer, proxy = self._proxy_buffer, self.settings.proxy
        assert buffer is not None
        assert proxy is not None
        buffer += data
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
        if header.source is not None:
            self.peer = Peer(header.source, "tcp")
        self._admit()
        return bytes(buffer[consumed:])

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what it sent, then close.
        self._close_after_replies()
        return True  # keep the write side open until the replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self.turns.cancel()
        if exc is not None and self.transport is not None and self.session.write_stalled:
            self._discard(self.transport, lost=True)  # lost with its buffer full
        self._unpoll()
        self.session.abort()
        self.replies.cancel()
        self.counters.connections_closed += 1
        if not self.closed.done():
            self.closed.set_result(None)
        self.registry.release(self)

    def pause_writing(self) -> None:
        if self.session.write_blocked(self.clock()):
            self.transport_reading(False)

    def resume_writing(self) -> None:
        if self.session.write_unblocked():
            self.transport_reading(True)
        self.turns.turn_soon()

    def check_timeouts(self, now: float) -> None:
        """Close the connection if its session is past a timeout (the registry's sweep)."""
        if self.transport is None or self.transport.is_closing():
            return
        timeout = self.session.check_timeouts(now)
        if timeout is not None:
            self._give_up(timeout.value)

    def _give_up(self, reason: str) -> None:
        assert self.peer is not None
        assert self.transport is not None
        log_abuse(reason, self.peer, self.clock())
        self._unpoll()
        self.session.abort()
        self._discard(self.transport)
        self.transport.abort()

    # -- life cycle used by the server ----------------------------------------

    def stop_reading(self) -> None:
        """Take no new requests; the ones received are still answered (the backlog's
        too, at once, unless they wait for the rate limit's tokens)."""
        self._unpoll()
        self.pause_reading(Paused.SHUTDOWN)
        session = self.session
        while session.backlog and not session.closing and session.refill_at is None:
            self.data_received(b"")  # bounded: each turn takes a turn's bytes of it
        self._close_after_replies()

    def abort(self) -> None:
        self._unpoll()
        if self.transport is not None:
            self._discard(self.transport)
            self.transport.abort()

    def _unpoll(self) -> None:
        if self.handoff is not None:
            self.handoff.unpoll(resume=False)

    # -- replies ----------------------------------------------------------------

    def write(self, wire: bytes, *, is_reply: bool) -> None:
        """Write a reply or an error line, in request order."""
        self.replies.write(wire, is_reply=is_reply, arrived=self.arrived)

    def _close_after_replies(self) -> None:
        if self.session.close_after_replies():
            self._unpoll()
            self.pause_reading(Paused.CLOSING)
            self.replies.close_when_written()

    # -- flow control: the session decides, the transport does ------------------

    def pause_reading(self, reason: Paused) -> None:
        if self.session.pause(reason):
            self.transport_reading(False)

    def resume_reading(self, reason: Paused) -> None:
        if self.session.resume(reason):
            self.transport_reading(True)
        self.turns.turn_soon()  # a backlog held only by this reason goes on

    def transport_reading(self, on: bool) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()
