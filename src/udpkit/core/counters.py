"""Counters of what a server did with every request, in one place.

Rule: every request that reaches the server ends in exactly one outcome
counter, so ``received == replied + no_reply + sum(drops) + errors`` holds at
any quiet moment.  The hot path bumps plain attributes of a slotted object;
readers take a frozen :class:`CounterSnapshot` that tests compare exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

#: Outcome counters; each request lands in exactly one of these.
OUTCOMES: tuple[str, ...] = (
    "replied",
    "no_reply",
    "dropped_empty",
    "dropped_oversize",
    "dropped_truncated",
    "dropped_denied",
    "dropped_rate_limited",
    "dropped_amplification",
    "dropped_overload",
    "handler_errors",
    "handler_timeouts",
    "send_errors",
)


class Counters:
    """Mutable counters for one transport of one server (hot path: plain ints)."""

    __slots__ = (
        "closed_bad_proxy",
        "closed_idle",
        "closed_slow",
        "closed_write_timeout",
        "connections_closed",
        "connections_denied",
        "connections_opened",
        "connections_rejected",
        "dropped_amplification",
        "dropped_denied",
        "dropped_empty",
        "dropped_overload",
        "dropped_oversize",
        "dropped_rate_limited",
        "dropped_truncated",
        "handler_errors",
        "handler_timeouts",
        "kernel_drops",
        "no_reply",
        "received",
        "replied",
        "send_errors",
    )

    def __init__(self) -> None:
        self.received = 0
        self.replied = 0
        self.no_reply = 0
        self.dropped_empty = 0
        self.dropped_oversize = 0
        self.dropped_truncated = 0
        self.dropped_denied = 0
        self.dropped_rate_limited = 0
        self.dropped_amplification = 0
        self.dropped_overload = 0
        self.handler_errors = 0
        self.handler_timeouts = 0
        self.send_errors = 0
        self.kernel_drops = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_rejected = 0
        self.connections_denied = 0
        self.closed_idle = 0
        self.closed_slow = 0
        self.closed_write_timeout = 0
        self.closed_bad_proxy = 0

    def snapshot(self) -> CounterSnapshot:
        return CounterSnapshot(**{name: getattr(self, name) for name in self.__slots__})


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    """A frozen copy of :class:`Counters`, safe to compare and to print."""

    received: int = 0
    """Requests taken from the network: datagrams (UDP) or messages (TCP)."""
    replied: int = 0
    """Requests answered by the handler's reply."""
    no_reply: int = 0
    """Requests whose handler returned ``None`` on purpose."""
    dropped_empty: int = 0
    """Empty datagrams or empty TCP lines: nothing to greet."""
    dropped_oversize: int = 0
    """Requests longer than ``max_request``."""
    dropped_truncated: int = 0
    """Datagrams larger than the receive buffer (``MSG_TRUNC``); never answered."""
    dropped_denied: int = 0
    """Requests from a source the allow/deny lists refuse."""
    dropped_rate_limited: int = 0
    """Requests over their source's rate limit."""
    dropped_amplification: int = 0
    """UDP replies larger than ``max_amplification`` times their request, not sent."""
    dropped_overload: int = 0
    """Requests whose async handler call would have gone over the in-flight caps (in all,
    or of its source); never awaited."""
    handler_errors: int = 0
    """Handler raised (any exception) or returned a wrong type; logged, and the server
    kept serving."""
    handler_timeouts: int = 0
    """Async handler calls that did not finish within ``handler_timeout``."""
    send_errors: int = 0
    """The reply could not be sent (socket error, peer gone, send queue full)."""
    kernel_drops: int = 0
    """Datagrams the kernel dropped because the receive queue was full
    (``SO_RXQ_OVFL``); they never reached the server, so are not in ``received``."""
    connections_opened: int = 0
    """TCP connections accepted."""
    connections_closed: int = 0
    """TCP connections closed, by either side."""
    connections_rejected: int = 0
    """TCP connections over the total or per-source cap (told ``busy``, closed)."""
    connections_denied: int = 0
    """TCP connections from a source the allow/deny lists refuse (closed at once)."""
    closed_idle: int = 0
    """TCP connections closed after ``tcp_idle_timeout`` without a complete request."""
    closed_slow: int = 0
    """TCP connections closed because a request line took over ``tcp_line_timeout``."""
    closed_write_timeout: int = 0
    """TCP connections closed because the client did not read its replies."""
    closed_bad_proxy: int = 0
    """TCP connections closed because their PROXY protocol header was malformed."""

    @property
    def dropped(self) -> int:
        return sum(getattr(self, name) for name in OUTCOMES if name.startswith("dropped_"))

    @property
    def errors(self) -> int:
        return self.handler_errors + self.handler_timeouts + self.send_errors

    @property
    def accounted(self) -> int:
        """Requests with a known outcome; equals ``received`` when nothing is in flight."""
        return sum(getattr(self, name) for name in OUTCOMES)

    def summary(self) -> str:
        """One line: ``received=3 replied=3 no_reply=0 dropped(empty=0 ...) errors(...)``."""
        return (
            f"received={self.received} replied={self.replied} no_reply={self.no_reply} "
            f"dropped(empty={self.dropped_empty} oversize={self.dropped_oversize} "
            f"truncated={self.dropped_truncated} denied={self.dropped_denied} "
            f"rate_limited={self.dropped_rate_limited} "
            f"amplification={self.dropped_amplification} "
            f"overload={self.dropped_overload}) "
            f"errors(handler={self.handler_errors} timeout={self.handler_timeouts} "
            f"send={self.send_errors})"
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
