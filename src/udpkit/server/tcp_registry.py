"""What all TCP connections of one server share: settings, caps, sweep, C paths.

Rule: :class:`ConnectionRegistry` is the one owner of the open connections,
their total and per-source caps, the one C poller and the one periodic sweep
that asks each connection's session whether it is past a timeout (one timer
for all, not one a connection).  Which C path serves TCP is decided here once
per server (:func:`tcp_fast_path`, :func:`tcp_line_poller`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from udpkit import _native
from udpkit.core.admission import Admission
from udpkit.core.counters import Counters
from udpkit.core.framing import STREAMED
from udpkit.core.handler import Handler
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.proxy_protocol import ProxyProtocolPolicy
from udpkit.core.tcp_session import SessionLimits
from udpkit.server import udp as _udp_glue
from udpkit.server.dispatch import AsyncCalls

if TYPE_CHECKING:
    from udpkit.server.tcp import TcpConnection

TCP_FAST_PATH_NAME = "line splitting in C (C extension)"


def tcp_fast_path(
    handler: Handler, *, framing: str, enabled: bool = True, access_log: bool = False
) -> tuple[_native.LineReaderType | None, str]:
    """The C line reader type for TCP, or ``None`` and why it cannot serve here."""
    refusal = _udp_glue.fast_path_refusal(handler, enabled=enabled, access_log=access_log)
    if refusal is not None:
        return None, refusal
    if framing not in STREAMED:
        return None, f"{framing} framing"
    reader = _native.line_reader_type()
    if reader is None:
        return None, "C extension too old (no LineReader): rebuild it"
    return reader, ""


def tcp_line_poller() -> _native.LinePollerType | None:
    """The C poller type that reads fast-path connections, or ``None`` (extension too
    old, or ``UDPKIT_NO_TCP_POLLER=1``, a switch for benchmarks and tests)."""
    if os.environ.get("UDPKIT_NO_TCP_POLLER", "") not in ("", "0"):
        return None
    return _native.line_poller_type()


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
    proxy: ProxyProtocolPolicy | None = None
    """PROXY protocol on: which peers must send the header first."""
    line_reader: _native.LineReaderType | None = None
    """The C fast path for line framing (see :func:`tcp_fast_path`), or ``None``."""
    line_poller: _native.LinePollerType | None = None
    """With ``line_reader``: the C poller that reads connections in the simple state
    (see :func:`tcp_line_poller`), or ``None``: the event loop reads every connection."""
    async_calls: AsyncCalls = field(default_factory=AsyncCalls)
    """The async handler calls of the transport: their deadline and caps."""
    clock: Callable[[], float] = time.monotonic
    """The monotonic clock whose readings the sessions are given."""


def peer_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """The peer's address, asked once; ``None`` if the peer is already gone (uvloop gives
    no ``peername`` for a connection reset before it was accepted; the socket then says
    ``ENOTCONN``)."""
    address = transport.get_extra_info("peername")
    if address is None:
        sock = transport.get_extra_info("socket")
        try:
            address = None if sock is None else sock.getpeername()
        except OSError:
            return None
    return address  # type: ignore[no-any-return]


class ConnectionRegistry:
    """The open connections: caps on admission, timeouts by periodic sweep."""

    def __init__(self, settings: TcpSettings) -> None:
        self.settings = settings
        self.limits = SessionLimits(
            pipeline=settings.pipeline, idle_timeout=settings.idle_timeout,
            line_timeout=settings.line_timeout, write_timeout=settings.write_timeout,
        )
        self.connections: set[TcpConnection] = set()
        self._per_source: dict[object, int] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.poller: _native.LinePoller | None = None
        """The one C poller of these connections, watched by the loop."""
        if settings.line_poller is not None:
            observe = None if settings.latency is None else settings.latency.observe
            limits = self.limits
            poller = settings.line_poller(
                settings.counters, observe, turn_bytes=limits.turn_bytes,
                poll_bytes=limits.poll_bytes,
            )
            asyncio.get_running_loop().add_reader(poller.fileno(), poller.poll)
            self.poller = poller

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
        now = self.settings.clock()
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
