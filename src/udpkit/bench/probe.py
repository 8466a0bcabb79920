"""``udpkit ping`` as a library: one numbered probe per interval, ping(8)'s report.

Rule: the statistics are the sans-IO :class:`~udpkit.core.probe_stats.ProbeStats`;
this module only sends probes, reads replies and reports each event through a
callback.  UDP uses a connected socket (ICMP port unreachable becomes
"refused" for the latest probe); TCP one connection, one probe per message of
its framing (a line by default, the ``Welcome!`` line skipped; len16: each
after its two-byte length).  Setting the ``stop`` event (Ctrl-C) ends the run
with the summary so far.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from udpkit.apps import DEFAULT_APP, reply_rule, request_source
from udpkit.bench.udp_generator import open_udp_socket
from udpkit.client.aio import resolve_address
from udpkit.core.errors import RequestRefused, UsageError
from udpkit.core.framing import FramingName, make_framing
from udpkit.core.handler import Address, TransportName, format_address
from udpkit.core.matching import ReplyRule
from udpkit.core.payloads import RequestSource
from udpkit.core.probe_stats import ProbeStats, ProbeSummary

EventKind = Literal["reply", "duplicate", "late", "timeout", "refused", "wrong"]


@dataclass(frozen=True, slots=True)
class PingEvent:
    """One line of ping's output."""

    kind: EventKind
    seq: int | None
    size: int = 0
    """Bytes of the reply."""
    rtt: float = 0.0
    out_of_order: bool = False


@dataclass(frozen=True, slots=True)
class PingStart:
    """What ping is about to do (its first line)."""

    server: Address
    transport: TransportName
    payload_size: int


async def ping_async(
    host: str,
    port: int,
    *,
    transport: TransportName = "udp",
    count: int | None = None,
    interval: float = 1.0,
    timeout: float = 1.0,
    template: str = "ping {seq}",
    expect: str = DEFAULT_APP,
    on_start: Callable[[PingStart], None] | None = None,
    on_event: Callable[[PingEvent], None] | None = None,
    stop: asyncio.Event | None = None,
    framing: FramingName = "line",
) -> ProbeSummary:
    """Send ``count`` probes (forever when ``None``) ``interval`` seconds apart
    (``framing``: the server's TCP framing)."""
    if count is not None and count < 1:
        raise UsageError(f"--count must be >= 1 (got {count})")
    if not interval > 0:
        raise UsageError(f"--interval must be > 0 (got {interval:g})")
    if not timeout > 0:
        raise UsageError(f"--timeout must be > 0 (got {timeout:g})")
    payloads = request_source(expect, template)
    rule = reply_rule(expect)
    rule.check(payloads)
    if transport == "tcp" and rule.keyed and framing != "len16":
        raise UsageError(f"--expect {expect} over TCP needs --tcp-framing len16")
    if transport == "tcp" and framing == "line" and b"\n" in payloads.render(0):
        raise UsageError("a TCP payload cannot contain a line break (one request per line)")
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    server = await resolve_address(host, port, kind)
    probe = _Prober(server, transport, payloads, rule, timeout, on_event, framing)
    await probe.open()
    if on_start is not None:
        on_start(PingStart(server, transport, len(payloads.render(0))))
    try:
        return await probe.run(count, interval, stop or asyncio.Event())
    finally:
        probe.close()


class _Prober:
    def __init__(
        self,
        server: Address,
        transport: TransportName,
        template: RequestSource,
        rule: ReplyRule,
        timeout: float,
        on_event: Callable[[PingEvent], None] | None,
        framing: FramingName = "line",
    ) -> None:
        self.server = server
        self.transport = transport
        self.template = template
        self.rule = rule
        self.on_event = on_event or (lambda event: None)
        self.loop = asyncio.get_running_loop()
        self.stats = ProbeStats(timeout=timeout, start=self.loop.time())
        self.next_seq = 0
        self.wakeup = asyncio.Event()
        self._sock: socket.socket | None = None
        self._tcp: asyncio.Transport | None = None
        self._framer = make_framing(framing, max_line=1 << 20)
        self._first_line = bool(self._framer.welcome)  # len16: no welcome to skip

    async def open(self) -> None:
        if self.transport == "udp":
            self._sock = open_udp_socket(self.server)
            self.loop.add_reader(self._sock.fileno(), self._on_readable)
            return
        try:
            self._tcp, _ = await self.loop.create_connection(
                lambda: _LineProtocol(self), self.server[0], self.server[1]
            )
        except ConnectionRefusedError:
            raise RequestRefused(
                "connection refused over tcp", address=format_address(self.server)
            ) from None

    def close(self) -> None:
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    async def run(self, count: int | None, interval: float, stop: asyncio.Event) -> ProbeSummary:
        next_send = self.loop.time()
        while not stop.is_set():
            now = self.loop.time()
            for seq in self.stats.expire(now):
                self.on_event(PingEvent("timeout", seq))
            more = count is None or self.next_seq < count
            if more and now >= next_send:
                self._send(now)
                next_send += interval
                continue
            if not more and self.stats.in_flight() == 0:
                break
            wake = [when for when in (next_send if more else None, self.stats.next_deadline())
                    if when is not None]
            delay = max(0.0, min(wake) - now) if wake else interval
            self.wakeup.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return self.stats.summary()

    def _send(self, now: float) -> None:
        seq = self.next_seq
        self.next_seq += 1
        payload = self.template.render(seq)
        self.stats.sent(seq, now)
        if self._sock is not None:
            try:
                self._sock.send(payload)
            except ConnectionRefusedError:
                self._refused(now)
            except OSError:
                pass  # it will time out
        elif self._tcp is not None:
            self._tcp.write(self._framer.frame(payload))

    def _refused(self, now: float) -> None:
        seq = self.next_seq - 1
        if self.stats.refused(seq, now):
            self.on_event(PingEvent("refused", seq))
        self.wakeup.set()

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self._refused(self.loop.time())
                continue
            except OSError:
                return
            self.handle_reply(data)

    def handle_reply(self, data: bytes) -> None:
        now = self.loop.time()
        seq = self.rule.find_seq_untrusted(data, self.template, self.next_seq)
        if seq is None:
            self.on_event(PingEvent("wrong", None, len(data)))
            return
        reply = self.stats.reply(seq, now)
        if reply.kind == "unknown":
            self.on_event(PingEvent("wrong", seq, len(data)))
            return
        self.on_event(PingEvent(reply.kind, seq, len(data), reply.rtt, reply.out_of_order))
        self.wakeup.set()

    def handle_line(self, line: bytes) -> None:
        if self._first_line:
            self._first_line = False
            if line == b"Welcome!":
                return
        self.handle_reply(line)

    def handle_tcp_lost(self) -> None:
        self._tcp = None
        self.wakeup.set()


class _LineProtocol(asyncio.Protocol):
    def __init__(self, prober: _Prober) -> None:
        self.prober = prober

    def data_received(self, data: bytes) -> None:
        for line in self.prober._framer.feed(data):
            self.prober.handle_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.prober.handle_tcp_lost()
