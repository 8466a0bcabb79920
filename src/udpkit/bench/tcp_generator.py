"""TCP load generator glue: N connections, requests pipelined, one per line (or per
len16 message: each after its length in two bytes).

Rule: framing is the sans-IO :mod:`udpkit.core.framing` and accounting the
sans-IO :class:`~udpkit.core.load_stats.LoadCore`; this module only connects,
writes and feeds received lines in.  A first line ``Welcome!`` (udpkit's TCP
greeting, line framing only) is skipped; every other message is a reply,
matched by content.

Closed loop: each connection keeps ``depth`` requests in flight; a place is
freed when the core matches a reply to one of its requests or times one out,
so a request the server never answers, or answers late, costs its place only
until its timeout, and junk or duplicate lines free nothing.  Open loop: due
requests go to the connections in turn.
"""

from __future__ import annotations

import asyncio

from udpkit.bench.generator import Generator
from udpkit.core.errors import RequestRefused
from udpkit.core.framing import FramingName, make_framing
from udpkit.core.handler import Address, format_address
from udpkit.core.load_stats import ArrivalSchedule, LoadCore

_WELCOME = b"Welcome!"
_MAX_LINE = 1 << 20


class _Connection(asyncio.Protocol):
    def __init__(self, generator: TcpGenerator) -> None:
        self.generator = generator
        self.framer = make_framing(generator.framing, max_line=_MAX_LINE)
        self.lines = generator.framing == "line"
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.first_line = bool(self.framer.welcome)  # len16: no welcome
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        lines = self.framer.feed(data)
        if self.first_line and lines:
            self.first_line = False
            if lines[0] == _WELCOME:
                lines = lines[1:]
        if lines:
            self.generator.on_replies(lines)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        self.generator.on_lost(self)

    def send(self, payloads: list[bytes]) -> None:
        if self.transport is None or not payloads:
            return
        if self.lines:
            self.transport.write(b"\n".join(payloads) + b"\n")
        else:
            self.transport.write(b"".join(map(self.framer.frame, payloads)))


class TcpGenerator(Generator):
    """``connections`` pipelined TCP connections driving one :class:`LoadCore`."""

    core: LoadCore

    def __init__(
        self,
        core: LoadCore,
        server: Address,
        *,
        connections: int,
        depth: int,
        schedule: ArrivalSchedule | None,
        framing: FramingName = "line",
    ) -> None:
        super().__init__(server)
        self.core = core
        self.framing: FramingName = framing
        self.connections = connections
        self.depth = depth
        self.schedule = schedule
        self._open: list[_Connection] = []
        self._turn = 0
        self._owner: dict[int, _Connection] = {}  # sequence number in flight -> its connection
        self._freed: list[int] = []  # scratch: sequence numbers answered or timed out

    async def _start(self) -> None:
        for _ in range(self.connections):
            try:
                _, connection = await self._loop.create_connection(
                    lambda: _Connection(self), self.server[0], self.server[1]
                )
            except ConnectionRefusedError:
                raise RequestRefused(
                    "connection refused over tcp", address=format_address(self.server)
                ) from None
            self._open.append(connection)
        now = self._loop.time()
        for connection in self._open:
            self._refill(connection, now)
        self._pump(now)

    def close(self) -> None:
        super().close()
        for connection in self._open:
            if connection.transport is not None:
                connection.transport.abort()
        self._open.clear()

    # -- callbacks -------------------------------------------------------------

    def on_replies(self, lines: list[bytes]) -> None:
        now = self._loop.time()
        freed = self._freed
        self.core.receive(lines, now, freed)
        self._free(now)
        self._pump(now)

    def on_lost(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.remove(connection)
        if not self._open and not self._done.done():
            # Nothing left to send on: what is in flight will time out.
            self.core.stop(self._loop.time())
            self._pump(self._loop.time())

    # -- glue ------------------------------------------------------------------

    def _free(self, now: float) -> None:
        """Give back the places of the requests in ``self._freed``; refill (closed loop)."""
        freed = self._freed
        if not freed:
            return
        owner = self._owner
        touched: set[_Connection] = set()
        for seq in freed:
            connection = owner.pop(seq, None)
            if connection is not None:
                connection.in_flight -= 1
                touched.add(connection)
        freed.clear()
        if self.schedule is None:
            for connection in touched:
                self._refill(connection, now)

    def _send(self, connection: _Connection, payloads: list[bytes], first_seq: int) -> None:
        if not payloads:
            return
        owner = self._owner
        for seq in range(first_seq, first_seq + len(payloads)):
            owner[seq] = connection
        connection.in_flight += len(payloads)
        connection.send(payloads)

    def _refill(self, connection: _Connection, now: float) -> None:
        want = self.depth - connection.in_flight
        if want > 0 and not connection.lost:
            payloads = self.core.issue(want, now)
            self._send(connection, payloads, self.core.issued - len(payloads))

    def _pump(self, now: float) -> None:
        core = self.core
        core.expire(now, self._freed)
        self._free(now)
        if self.schedule is not None and self._open:
            intended = self.schedule.due(now)
            payloads = core.issue_scheduled(intended, now) if intended else []
            if payloads:
                first = core.issued - len(payloads)
                share = max(1, -(-len(payloads) // len(self._open)))
                for start in range(0, len(payloads), share):
                    connection = self._open[self._turn % len(self._open)]
                    self._turn += 1
                    self._send(connection, payloads[start : start + share], first + start)
        if core.finished(now):
            if not self._done.done():
                self._done.set_result(None)
            return
        self._arm(now)

    def _arm(self, now: float) -> None:
        core = self.core
        when = core.next_deadline()
        if core.sending(now):
            candidates = [core.stop_at]
            if self.schedule is not None:
                candidates.append(self.schedule.next_time())
            if when is not None:
                candidates.append(when)
            when = min(candidates)
        if when is None or when == float("inf"):
            return
        self._timer.arm_earlier(when)  # an armed earlier timer fires first and re-arms
