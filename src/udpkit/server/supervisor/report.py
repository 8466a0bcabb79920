"""What a worker tells its supervisor over their pipe, as typed messages.

Rule: a worker sends :class:`Ready` once it serves (or :class:`StartFailed`
if it cannot), then a :class:`WorkerReport` every ``report_interval`` seconds
and once more at exit.  A report holds the worker's counters *so far* (a
snapshot, not a delta), so a lost or late one costs nothing but freshness;
:class:`ReportTotals` adds reports up.  Only these three types cross the pipe
(:func:`send_message`, :func:`receive_message`).

Why not ``prometheus_client``'s multiprocess mode: it only knows its own
metric objects (our collectors read the counters at scrape time and keep
Prometheus off the request path), needs a directory of memory-mapped files
that must be wiped between runs, and would not give the exit summary anyway; a
pipe of small snapshots does both and costs nothing per request.  A worker
killed with SIGKILL loses what it counted since its last report.
"""

from __future__ import annotations

import contextlib
import dataclasses
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from udpkit.core.counters import CounterSnapshot

if TYPE_CHECKING:
    from udpkit.server.runner import Server

_TRANSPORTS = ("udp", "tcp")


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """The worker has bound its sockets and serves."""

    pid: int


@dataclasses.dataclass(frozen=True, slots=True)
class StartFailed:
    """The worker could not start (bad app, port lost); ``reason`` is one line."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerReport:
    """A worker's counters so far."""

    udp: CounterSnapshot
    tcp: CounterSnapshot
    open_connections: int
    """TCP connections open now."""
    latency_counts: tuple[int, ...] | None = None
    """Requests per latency bucket (:class:`~udpkit.core.histogram.LatencyHistogram`),
    ``None`` when the worker keeps no histogram."""
    latency_total: float = 0.0
    """Sum of the latencies observed, in seconds."""
    handler_outcomes: tuple[tuple[str, int], ...] = ()
    """The handler's own tally (:meth:`Server.handler_outcomes`: ``serve dns``'s
    ``formerr``, ``rrl_drop``...), name and count."""

    @classmethod
    def of(cls, server: Server) -> WorkerReport:
        """What ``server`` has counted until now."""
        stats = server.stats()
        latency = server.latency
        return cls(
            udp=stats["udp"],
            tcp=stats["tcp"],
            open_connections=server.open_connections,
            latency_counts=tuple(latency.counts) if latency is not None else None,
            latency_total=latency.total if latency is not None else 0.0,
            handler_outcomes=tuple(server.handler_outcomes().items()),
        )


WorkerMessage = Ready | StartFailed | WorkerReport


def send_message(connection: Connection, message: WorkerMessage) -> None:
    """Send ``message``; a pipe whose other end is gone is not an error here."""
    with contextlib.suppress(OSError, ValueError):
        connection.send(message)


def receive_message(connection: Connection) -> WorkerMessage:
    """The next message (blocks); raises ``EOFError``/``OSError`` when the pipe is
    closed, ``TypeError`` for anything that is not a worker message."""
    message = connection.recv()
    if not isinstance(message, Ready | StartFailed | WorkerReport):
        raise TypeError(f"not a worker message: {type(message).__name__}")
    return message


class ReportTotals:
    """Reports added up: counters per transport, one latency histogram and the
    handler's tally."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, int]] = {transport: {} for transport in _TRANSPORTS}
        self.handler_outcomes: dict[str, int] = {}
        self.latency_counts: list[int] | None = None
        self.latency_total = 0.0

    def add(self, report: WorkerReport) -> None:
        """Add one worker's report."""
        self._add(
            {"udp": report.udp.as_dict(), "tcp": report.tcp.as_dict()},
            report.latency_counts,
            report.latency_total,
            report.handler_outcomes,
        )

    def merge(self, other: ReportTotals) -> None:
        """Add totals made earlier (those of workers that exited)."""
        self._add(other.counters, other.latency_counts, other.latency_total,
                  tuple(other.handler_outcomes.items()))

    def snapshot(self, transport: str) -> CounterSnapshot:
        """The added-up counters of ``transport`` (``udp`` or ``tcp``)."""
        return CounterSnapshot(**self.counters[transport])

    def _add(
        self,
        counters: dict[str, dict[str, int]],
        latency_counts: tuple[int, ...] | list[int] | None,
        latency_total: float,
        handler_outcomes: tuple[tuple[str, int], ...],
    ) -> None:
        for name, count in handler_outcomes:
            self.handler_outcomes[name] = self.handler_outcomes.get(name, 0) + count
        for transport in _TRANSPORTS:
            into = self.counters[transport]
            for name, value in counters[transport].items():
                into[name] = into.get(name, 0) + value
        if latency_counts is not None:
            if self.latency_counts is None:
                self.latency_counts = [0] * len(latency_counts)
            for index, count in enumerate(latency_counts):
                self.latency_counts[index] += count
            self.latency_total += latency_total
