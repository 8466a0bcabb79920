"""What the proxy did: the policy's per-direction counters and the glue's own.

Rule: the hot path bumps plain attributes of a slotted object; readers take a
frozen :class:`ProxyStats` that tests compare exactly and the control API and
the exit summary print as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from udpkit.core.impairment import LinkStats


class GlueCounters:
    """Mutable counters of the proxy's I/O glue (plain ints), frozen by :meth:`snapshot`.

    The server's counters are :class:`udpkit.core.counters.Counters`; these
    are the proxy's own (sessions, TCP relays, socket errors)."""

    __slots__ = (
        "delay_queue_full",
        "kernel_drops_down",
        "kernel_drops_up",
        "send_errors_down",
        "send_errors_up",
        "sessions_evicted",
        "sessions_expired",
        "sessions_opened",
        "tcp_closed",
        "tcp_opened",
        "tcp_rejected",
        "tcp_upstream_failures",
        "upstream_refused",
    )

    def __init__(self) -> None:
        self.sessions_opened = 0
        self.sessions_expired = 0
        self.sessions_evicted = 0
        self.send_errors_up = 0
        self.send_errors_down = 0
        self.upstream_refused = 0
        self.tcp_opened = 0
        self.tcp_closed = 0
        self.tcp_rejected = 0
        self.tcp_upstream_failures = 0
        self.delay_queue_full = 0
        self.kernel_drops_up = 0
        self.kernel_drops_down = 0

    def snapshot(self) -> GlueStats:
        return GlueStats(**{name: getattr(self, name) for name in self.__slots__})


@dataclass(frozen=True, slots=True)
class GlueStats:
    """A frozen copy of :class:`GlueCounters`: sessions, connections and socket errors."""

    sessions_opened: int = 0
    """UDP client sessions created (one upstream socket each)."""
    sessions_expired: int = 0
    """Sessions closed after ``idle_timeout`` of silence."""
    sessions_evicted: int = 0
    """Sessions closed to make room in a full table."""
    send_errors_up: int = 0
    """Datagrams the policy passed but the upstream socket would not take (buffer
    full, error, or the session gone meanwhile)."""
    send_errors_down: int = 0
    """Likewise towards clients."""
    upstream_refused: int = 0
    """ICMP port unreachable from the upstream service (nothing listening)."""
    tcp_opened: int = 0
    """TCP client connections relayed."""
    tcp_closed: int = 0
    """TCP relays finished (closed or reset)."""
    tcp_rejected: int = 0
    """TCP clients refused because ``max_connections`` were open."""
    tcp_upstream_failures: int = 0
    """TCP clients reset because the upstream connection could not be opened."""
    delay_queue_full: int = 0
    """Datagrams dropped because the delay queue already held its limit of bytes
    (``DELAY_QUEUE_BYTES``: long delays at a high rate)."""
    kernel_drops_up: int = 0
    """Datagrams from clients the kernel dropped on the proxy's listening socket, its
    receive buffer full (the proxy never saw them)."""
    kernel_drops_down: int = 0
    """Replies the kernel dropped on the proxy's upstream sockets, their buffers full."""


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A frozen picture of a proxy's counters."""

    up: LinkStats
    """Client to server."""
    down: LinkStats
    """Server to client."""
    glue: GlueStats
    sessions_active: int = 0
    tcp_active: int = 0

    def as_json(self) -> dict[str, object]:
        glue = {spec.name: getattr(self.glue, spec.name) for spec in fields(self.glue)}
        glue["sessions_active"] = self.sessions_active
        glue["tcp_active"] = self.tcp_active
        return {"up": self.up.as_json(), "down": self.down.as_json(), "proxy": glue}
