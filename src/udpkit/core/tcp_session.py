"""One TCP connection's state and rules, sans-IO (in the manner of h11's ``Connection``).

Rule: every rule of a connection is decided here and its state kept here,
once: the partial line (through the connection's :class:`Framing`, lent to a
C line reader for one call or to the C poller while it polls), the idle, line
and write timestamps, the pending async replies and the pipeline limit, the
reasons reading is paused, ``exit``, empty and oversize lines, the rate-limit
verdict and closing, and the connection's share of the event loop.  Whoever
reads the socket (the asyncio glue in :mod:`udpkit.server.tcp`, the C
``LineReader`` or ``LinePoller``) only reports
facts (:meth:`TcpSession.lines_read`: "n lines taken, k bytes of partial line
left, at ``now``") and carries out what the session decides.  No socket, no
clock: ``now`` is passed in, so tests drive time by hand.

Fairness (issue 16, item 11): a connection has at most
:attr:`SessionLimits.turn_bytes` of what it sent handled per turn of the
event loop (one callback); the rest is its :attr:`TcpSession.backlog` (or
stays in its socket, with the C poller, which reads no more than that), so
one greedy client waits for its next turn while every other client and UDP
have theirs.  A line over the source's rate limit is answered
``error: rate limited`` once, and the connection is not read again until the
source's bucket holds a grant of tokens (:attr:`TcpSession.refill_at`, at most
:data:`MAX_RATE_PAUSE` away): the lines sent meanwhile wait and are then
served or refused in order, so a limited client costs one error reply a
pause, not one a line, and nothing is dropped without an answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from udpkit.core.admission import TOKENS_PER_GRANT, Admission
from udpkit.core.counters import Counters
from udpkit.core.framing import Framing, StreamFraming, error_message

ERR_EMPTY = error_message("empty request")
ERR_TOO_LONG = error_message("request too long")
ERR_HANDLER = error_message("handler failed")
ERR_RATE_LIMITED = error_message("rate limited")
ERR_TIMEOUT = error_message("handler timed out")
ERR_OVERLOADED = error_message("overloaded")
BUSY = b"busy"
"""Said to a connection over the caps, before it is closed."""
SERVER_LINES = (ERR_EMPTY, ERR_TOO_LONG, ERR_HANDLER, ERR_RATE_LIMITED, ERR_TIMEOUT,
                ERR_OVERLOADED, BUSY)
"""Every line the server itself writes (not a reply), unframed; the welcome aside."""

TURN_BYTES = 1024
"""Bytes of one connection's requests handled per turn of the event loop, at most.
A turn of that many bytes of short lines costs about 0.1-0.2 ms of handler calls
(measured with ``benchmarks/bench_fairness.py``); a client with a few requests in
flight never reaches it."""
POLL_TURNS = 16
"""Turns the C poller serves per event-loop callback at most (``poll_bytes`` =
``POLL_TURNS * turn_bytes``): then the loop's other work comes round."""
MAX_RATE_PAUSE = 1.0
"""Seconds a rate-limited connection waits for tokens at most before it is read
again (a source limited to less than a grant a second gets one line a second)."""


class Paused(enum.IntFlag):
    """Why reading from the transport is paused (any one is enough).

    An ``IntFlag``, not a ``Flag``: every received chunk asks whether reading is
    paused, and an ``int``'s truth is C while a ``Flag``'s is a Python call."""

    POLLER = enum.auto()
    """The C poller reads the socket instead of the transport."""
    WRITING = enum.auto()
    """The client does not read its replies (the transport's write buffer is full)."""
    PIPELINE = enum.auto()
    """As many async replies are pending as the pipeline allows."""
    CLOSING = enum.auto()
    """The connection closes once its replies are written."""
    SHUTDOWN = enum.auto()
    """The server takes no new requests."""
    TURN = enum.auto()
    """Bytes received wait for the connection's next turn (:attr:`TcpSession.backlog`)."""
    RATE = enum.auto()
    """The source is over its rate: reading waits for tokens (:attr:`TcpSession.refill_at`)."""


NOT_PAUSED = Paused(0)


class Line(enum.Enum):
    """What to do with one complete line (:meth:`TcpSession.judge`)."""

    HANDLE = "handle"
    """Call the handler."""
    EMPTY = "empty"
    """Answer :data:`ERR_EMPTY` (counted)."""
    EMPTY_CLOSE = "empty_close"
    """Answer :data:`ERR_EMPTY` (counted), then close: nothing after it counts
    (a framing whose empty message is a broken peer, :attr:`Framing.empty_closes`)."""
    RATE_LIMITED = "rate_limited"
    """Answer :data:`ERR_RATE_LIMITED` (counted); log it as abuse; the lines after it
    wait (:meth:`TcpSession.hold_back`) until :attr:`TcpSession.refill_at`."""
    EXIT = "exit"
    """The client asks to close: nothing after it counts (:meth:`TcpSession.exit`)."""


class Timeout(enum.Enum):
    """Why the sweep closes a connection; the value is the reason logged."""

    WRITE = "write_timeout"
    LINE = "slow"
    IDLE = "idle"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimits:
    """What every connection of one server shares."""

    pipeline: int
    """Async replies pending at most before reading pauses."""
    idle_timeout: float
    """Seconds without a complete request before the connection is closed."""
    line_timeout: float
    """Seconds an unfinished line (or PROXY header) may take."""
    write_timeout: float
    """Seconds a client may leave its replies unread once the buffer is full."""
    turn_bytes: int = TURN_BYTES
    """Bytes of requests handled per turn of the event loop at most (line framing; a raw
    chunk is one message, at most ``max_line`` long): the rest waits for the next turn."""

    @property
    def poll_bytes(self) -> int:
        """Bytes the C poller reads per event-loop callback, all connections together."""
        return POLL_TURNS * self.turn_bytes


class TcpSession:
    """One connection: owns its state, answers what happens next."""

    __slots__ = (
        "_admission",
        "_exit",
        "_lines",
        "backlog",
        "backlog_start",
        "closing",
        "counters",
        "framing",
        "host",
        "last_request",
        "limits",
        "line_started",
        "paused",
        "pending",
        "rate_limited",
        "refill_at",
        "write_stalled",
    )

    def __init__(
        self, framing: Framing, limits: SessionLimits, counters: Counters, *, now: float
    ) -> None:
        self.framing = framing
        self.limits = limits
        self.counters = counters
        self.last_request = now
        """When the last complete request arrived (or the connection opened)."""
        self.line_started: float | None = None
        """When the unfinished line (or the awaited PROXY header) began."""
        self.write_stalled: float | None = None
        """When the transport's write buffer filled up, while it is full."""
        self.paused = NOT_PAUSED
        self.pending = 0
        """Replies queued behind an async one (their order is kept)."""
        self.closing = False
        self.host = ""
        self.rate_limited = False
        """Whether a rate limit applies to this source (else no check per request)."""
        self.refill_at: float | None = None
        """After a rate-limited line: when to read again (the source's bucket holds a grant)."""
        self.backlog = b""
        """Bytes received and not yet handled, from :attr:`backlog_start` on: they go first
        in the next turn.  Empty when nothing is left (then the start is 0)."""
        self.backlog_start = 0
        """Where the unhandled part of :attr:`backlog` begins (turns move it, not copy)."""
        self._admission: Admission | None = None
        self._lines = framing if isinstance(framing, StreamFraming) else None
        """A streamed framing (line, len16): the one holder of the partial message
        (when not lent)."""
        self._exit = framing.exit

    # -- admission --------------------------------------------------------------

    def awaiting_header(self, now: float) -> None:
        """A PROXY header is due first: the line timeout runs from now."""
        self.line_started = now

    def admitted(self, host: str, admission: Admission | None) -> None:
        """The peer (``host``) passed the access lists and caps."""
        self.host = host
        self.line_started = None
        self._admission = admission
        self.rate_limited = admission is not None and admission.constant_verdict(host) is None

    # -- the partial line -------------------------------------------------------

    def lend_partial(self) -> bytes:
        """Hand the unfinished line to a C line splitter (streamed framing only); it comes
        back with :meth:`lines_split` or :meth:`partial_returned`."""
        lines = self._lines
        assert lines is not None
        partial, lines.partial = lines.partial, b""
        return partial

    def partial_returned(self, partial: bytes) -> None:
        """The unfinished line is back (after a stop, the bytes left are not one)."""
        assert self._lines is not None
        self._lines.partial = partial

    def lines_split(self, taken: int, partial: bytes, now: float) -> None:
        """A C splitter took ``taken`` requests from bytes received at ``now`` and gives
        back the unfinished line: :meth:`partial_returned` and :meth:`lines_read`."""
        assert self._lines is not None
        self._lines.partial = partial
        self.lines_read(taken, len(partial), now)

    # -- facts ------------------------------------------------------------------

    def lines_read(self, taken: int, partial_left: int, now: float) -> None:
        """``taken`` requests were taken from bytes received at ``now``, and
        ``partial_left`` bytes of an unfinished line are left.  The one place the
        idle and line clocks move: a slowloris cannot reset them a byte at a time."""
        if taken:
            self.last_request = now
            self.line_started = now if partial_left else None
        elif not partial_left:
            self.line_started = None
        elif self.line_started is None:
            self.line_started = now

    def take_turn(self, data: bytes) -> bytes:
        """The bytes to handle in this turn: the backlog, then ``data``, up to
        ``turn_bytes`` (streamed framing; a raw chunk is one message, taken whole).  What is
        left is the backlog, for the next turn (:attr:`turn_due`)."""
        start = 0
        backlog = data
        if self.backlog:
            start = self.backlog_start
            backlog = self.backlog
            if data:  # rare: reading is paused while a backlog waits
                backlog, start = backlog[start:] + data, 0
        end = start + self.limits.turn_bytes
        if self._lines is None or len(backlog) <= end:
            self.backlog, self.backlog_start = b"", 0
            return backlog[start:] if start else backlog
        self.backlog, self.backlog_start = backlog, end
        return backlog[start:end]

    @property
    def unhandled(self) -> bytes:
        """The backlog's bytes not yet handled."""
        return self.backlog[self.backlog_start :]

    @property
    def turn_due(self) -> bool:
        """Whether the backlog may be handled now (nothing but the turn holds it)."""
        return bool(self.backlog) and not self.closing and not self.paused & ~Paused.TURN

    def hold_back(self, messages: list[bytes]) -> None:
        """Complete lines not handled in this turn (after a rate-limited one) and the
        partial line behind them go back to the front of the backlog."""
        lines = self._lines
        if lines is None:  # raw framing: one message a chunk, nothing after it
            return
        held = b"".join(map(lines.frame, messages)) + lines.partial  # as they came
        lines.partial = b""
        self.backlog, self.backlog_start = held + self.unhandled, 0

    def tokens_refilled(self) -> bool:
        """The rate pause is over; ``True`` if reading must resume now."""
        self.refill_at = None
        return self.resume(Paused.RATE)

    def receive(self, data: bytes) -> list[bytes]:
        """The pure path: the complete messages ``data`` finishes."""
        return self.framing.feed(data)

    def judge(self, message: bytes, now: float) -> Line:
        """A complete line: count it (``exit`` is not a request) and say what to do."""
        if message == self._exit:
            return Line.EXIT
        counters = self.counters
        counters.received += 1
        if not message:
            counters.dropped_empty += 1
            return Line.EMPTY_CLOSE if self.framing.empty_closes else Line.EMPTY
        if self.rate_limited:
            admission = self._admission
            if admission is not None and admission.check(self.host, now) is not None:
                counters.dropped_rate_limited += 1  # denied sources were refused at connect
                wait = admission.refill_time(self.host, now, TOKENS_PER_GRANT)
                self.refill_at = now + min(wait, MAX_RATE_PAUSE)
                return Line.RATE_LIMITED
        return Line.HANDLE

    def exit(self, taken: int, now: float) -> None:
        """The client sent ``exit`` (or an empty message that closes) after ``taken``
        requests: nothing after it counts; the caller closes after the replies
        (:meth:`close_after_replies`)."""
        if self._lines is not None:
            self._lines.partial = b""
        self.lines_read(taken, 0, now)

    def oversize(self) -> bytes:
        """A line over the limit: count it; the reply to write before closing
        (the caller closes after the replies)."""
        self.framing.too_long = True
        if self._lines is not None:
            self._lines.partial = b""
        self.counters.received += 1
        self.counters.dropped_oversize += 1
        return self.framing.frame(ERR_TOO_LONG)

    @property
    def too_long(self) -> bool:
        return self.framing.too_long

    # -- replies and flow control -----------------------------------------------

    def reply_queued(self) -> bool:
        """An async reply (or one behind it) was queued; ``True``: pause for the pipeline."""
        self.pending += 1
        return self.pending >= self.limits.pipeline

    def reply_written(self) -> bool:
        """A queued reply left; ``True``: the pipeline has room again."""
        self.pending -= 1
        return self.pending < self.limits.pipeline // 2

    def pause(self, reason: Paused) -> bool:
        """Add a reason; ``True`` if reading must pause now (there was none)."""
        was = self.paused
        self.paused = was | reason
        return not was

    def resume(self, reason: Paused) -> bool:
        """Drop a reason; ``True`` if reading must resume now (it was the last)."""
        if not self.paused & reason:
            return False
        self.paused &= ~reason
        return not self.paused

    def write_blocked(self, now: float) -> bool:
        self.write_stalled = now
        return self.pause(Paused.WRITING)

    def write_unblocked(self) -> bool:
        self.write_stalled = None
        return self.resume(Paused.WRITING)

    @property
    def simple(self) -> bool:
        """Whether a C poller may read this connection: nothing pending, not closing,
        reading not paused for any reason."""
        return not (self.closing or self.pending or self.paused)

    def abort(self) -> None:
        """The connection is dropped now: nothing more is read or answered."""
        self.closing = True

    def close_after_replies(self) -> bool:
        """``True`` the first time: stop reading, close once the replies are out."""
        if self.closing:
            return False
        self.closing = True
        return True

    # -- deadlines --------------------------------------------------------------

    def check_timeouts(self, now: float) -> Timeout | None:
        """Which timeout (counted) the connection is past at ``now``, if any."""
        limits = self.limits
        counters = self.counters
        if self.write_stalled is not None:
            if now - self.write_stalled > limits.write_timeout:
                counters.closed_write_timeout += 1
                return Timeout.WRITE
            return None
        if self.line_started is not None and now - self.line_started > limits.line_timeout:
            counters.closed_slow += 1
            return Timeout.LINE
        if now - self.last_request > limits.idle_timeout and not self.pending:
            counters.closed_idle += 1
            return Timeout.IDLE
        return None
