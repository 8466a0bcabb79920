"""One TCP connection's state and rules, sans-IO (in the manner of h11's ``Connection``).

Rule: every rule of a connection is decided here and its state kept here,
once: the partial line (through the connection's :class:`Framing`, lent to a
C line reader for one call or to the C poller while it polls), the idle, line
and write timestamps, the pending async replies and the pipeline limit, the
reasons reading is paused, ``exit``, empty and oversize lines, the rate-limit
verdict and closing.  Whoever reads the socket (the asyncio glue in
:mod:`udpkit.server.tcp`, the C ``LineReader`` or ``LinePoller``) only reports
facts (:meth:`TcpSession.lines_read`: "n lines taken, k bytes of partial line
left, at ``now``") and carries out what the session decides.  No socket, no
clock: ``now`` is passed in, so tests drive time by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from udpkit.core.admission import Admission
from udpkit.core.counters import Counters
from udpkit.core.framing import EXIT, Framing, LineFraming, error_message

ERR_EMPTY = error_message("empty request")
ERR_TOO_LONG = error_message("request too long")
ERR_HANDLER = error_message("handler failed")
ERR_RATE_LIMITED = error_message("rate limited")
ERR_TIMEOUT = error_message("handler timed out")
ERR_OVERLOADED = error_message("overloaded")


class Paused(enum.Flag):
    """Why reading from the transport is paused (any one is enough)."""

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


NOT_PAUSED = Paused(0)


class Line(enum.Enum):
    """What to do with one complete line (:meth:`TcpSession.judge`)."""

    HANDLE = "handle"
    """Call the handler."""
    EMPTY = "empty"
    """Answer :data:`ERR_EMPTY` (counted)."""
    RATE_LIMITED = "rate_limited"
    """Answer :data:`ERR_RATE_LIMITED` (counted); log it as abuse."""
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


class TcpSession:
    """One connection: owns its state, answers what happens next."""

    __slots__ = (
        "_admission",
        "_lines",
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
        self._admission: Admission | None = None
        self._lines = framing if isinstance(framing, LineFraming) else None
        """Line framing: the one holder of the partial line (when not lent)."""

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
        """Hand the unfinished line to a C line splitter (line framing only); it comes
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

    def receive(self, data: bytes) -> list[bytes]:
        """The pure path: the complete messages ``data`` finishes."""
        return self.framing.feed(data)

    def judge(self, message: bytes, now: float) -> Line:
        """A complete line: count it (``exit`` is not a request) and say what to do."""
        if message == EXIT:
            return Line.EXIT
        counters = self.counters
        counters.received += 1
        if not message:
            counters.dropped_empty += 1
            return Line.EMPTY
        if self.rate_limited:
            admission = self._admission
            if admission is not None and admission.check(self.host, now) is not None:
                counters.dropped_rate_limited += 1  # denied sources were refused at connect
                return Line.RATE_LIMITED
        return Line.HANDLE

    def exit(self, taken: int, now: float) -> None:
        """The client sent ``exit`` after ``taken`` requests: nothing after it counts;
        the caller closes after the replies (:meth:`close_after_replies`)."""
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
