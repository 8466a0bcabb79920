"""``udpkit audit`` as a library: probe any UDP service, count what comes back.

Rule: this module only sends datagrams and counts the replies (datagrams and
bytes) in time windows; every figure and verdict comes from the sans-IO
:func:`udpkit.core.audit_report.analyse`.  No reply is matched to its request:
a window's replies are whatever arrived in it, so any service can be audited,
whatever its protocol.

Three phases, each on its own connected UDP socket (an ICMP port unreachable
becomes :class:`~udpkit.core.errors.RequestRefused`):

1. the size sweep: ``probes`` requests of each size, then wait for as many
   replies (or ``timeout``) and ``settle`` seconds more for extra datagrams;
2. unusual input: empty and oversized datagrams, the same way;
3. the rate ramp: one source sends at each rate for ``step_duration``
   seconds, then listens ``drain`` seconds; replies are counted per step.

A token bucket lets a burst through before it limits: a step of ``r`` req/s
for ``d`` seconds shows a limit ``R`` with burst ``B`` only when
``r * d > B + R * d``; longer steps (``step_duration``) see smaller limits.

The whole run works to one deadline (``max_time``): a phase that no longer
fits is skipped and noted in the report.  The tool may be pointed at any
host: only audit services you are allowed to load.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import replace

from udpkit.audit.config import AuditConfig
from udpkit.bench.udp_generator import open_udp_socket
from udpkit.client.aio import resolve_address
from udpkit.core.audit_report import (
    IPV4_UDP_HEADERS,
    IPV6_UDP_HEADERS,
    AuditObservations,
    AuditReport,
    ProbeObservation,
    RampObservation,
    analyse,
)
from udpkit.core.errors import RequestRefused
from udpkit.core.handler import Address, format_address

_RECV_SIZE = 65536
_FILLER = b"udpkit-audit."
_RAMP_TICK = 0.002
_MIN_RAMP_SIZE = 8


def payload(size: int) -> bytes:
    """``size`` bytes of printable filler (never ending in a line break)."""
    return (_FILLER * (size // len(_FILLER) + 1))[:size]


def audit(host: str, port: int, *, quick: bool = False, **options: object) -> AuditReport:
    """Audit the UDP service at ``host:port`` and return the report (blocking).

    ``options`` are :class:`~udpkit.audit.config.AuditConfig` fields;
    ``quick=True`` starts from :meth:`AuditConfig.quick`.
    """
    base = AuditConfig.quick() if quick else AuditConfig()
    config = replace(base, host=host, port=port, **options)  # type: ignore[arg-type]
    return asyncio.run(audit_async(config))


async def audit_async(config: AuditConfig) -> AuditReport:
    """Run the three phases of ``config`` and analyse what came back."""
    config = config.check()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.max_time
    server = await resolve_address(config.host, config.port, socket.SOCK_DGRAM)
    runner = _Audit(config, server, deadline)
    return analyse(await runner.run(), threshold=config.threshold)


class _Window:
    """One connected socket and the replies counted on it."""

    def __init__(self, server: Address) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.sock = open_udp_socket(server)
        self.replies = 0
        self.reply_bytes = 0
        self.largest = 0
        self.refused = False
        self._arrived = asyncio.Event()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self.refused = True
                self._arrived.set()
                return
            except OSError:  # another ICMP error: not a reply, keep listening
                return
            self.replies += 1
            self.reply_bytes += len(data)
            self.largest = max(self.largest, len(data))
            self._arrived.set()

    def send(self, data: bytes) -> str | None:
        """Send one datagram; ``None`` when it left, else the errno name."""
        try:
            self.sock.send(data)
        except ConnectionRefusedError:
            self.refused = True
            return "ECONNREFUSED"
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
        return None

    def check_refused(self) -> None:
        if self.refused:
            raise RequestRefused("port unreachable over udp (nothing listens there)",
                                 address=format_address(self.server))

    async def wait(self, until: float, *, replies: int | None = None) -> None:
        """Until ``until`` (loop time), or earlier once ``replies`` have arrived."""
        while not self.refused and (replies is None or self.replies < replies):
            remaining = until - self.loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    async def probe(self, size: int, count: int, timeout: float, settle: float) -> ProbeObservation:
        """Send ``count`` datagrams of ``size`` bytes; count what comes back."""
        before = (self.replies, self.reply_bytes)
        self.largest = 0
        data = payload(size)
        sent, error = 0, None
        for _ in range(count):
            failure = self.send(data)
            if failure is None:
                sent += 1
            else:
                error = failure
        self.check_refused()
        if sent:
            await self.wait(self.loop.time() + timeout, replies=before[0] + sent)
            await self.wait(self.loop.time() + settle)
            self.check_refused()
        return ProbeObservation(
            size=size, sent=sent, replies=self.replies - before[0],
            reply_bytes=self.reply_bytes - before[1], largest_reply=self.largest,
            send_error=error,
        )


class _Audit:
    def __init__(self, config: AuditConfig, server: Address, deadline: float) -> None:
        self.config = config
        self.server = server
        self.deadline = deadline
        self.loop = asyncio.get_running_loop()
        self.notes: list[str] = []

    def _fits(self, seconds: float) -> bool:
        return self.loop.time() + seconds <= self.deadline

    async def _probe_all(self, sizes: tuple[int, ...], what: str) -> list[ProbeObservation]:
        config = self.config
        window = _Window(self.server)
        results: list[ProbeObservation] = []
        try:
            for size in sizes:
                if not self._fits(config.timeout + config.settle):
                    skipped = sizes[len(results):]
                    self.notes.append(f"time budget spent: {what} sizes {list(skipped)} not probed")
                    break
                results.append(await window.probe(size, config.probes, config.timeout,
                                                  config.settle))
        finally:
            window.close()
        return results

    async def run(self) -> AuditObservations:
        config = self.config
        sizes = await self._probe_all(config.sizes, "sweep")
        unusual = ((0,) if config.empty else ()) + config.oversize
        odd = await self._probe_all(unusual, "unusual-input") if unusual else []
        empty = odd[0] if config.empty and odd else None
        oversize = odd[1:] if config.empty else odd
        ramp_size = self._ramp_size(sizes)
        ramp: list[RampObservation] = []
        if config.rates and ramp_size is None:
            self.notes.append("rate ramp skipped: no request size of the sweep was answered")
        elif config.rates and ramp_size is not None:
            ramp = await self._ramp(ramp_size)
        headers = IPV6_UDP_HEADERS if ":" in self.server[0] else IPV4_UDP_HEADERS
        return AuditObservations(
            target=format_address(self.server),
            header_bytes=headers,
            sizes=tuple(sizes),
            empty=empty,
            oversize=tuple(oversize),
            ramp_request_size=ramp_size if ramp else None,
            ramp=tuple(ramp),
            notes=tuple(self.notes),
        )

    def _ramp_size(self, sizes: list[ProbeObservation]) -> int | None:
        if self.config.ramp_size is not None:
            return self.config.ramp_size
        answered = [obs.size for obs in sizes if obs.replies and obs.size > 0]
        if not answered:
            return None
        large_enough = [size for size in answered if size >= _MIN_RAMP_SIZE]
        return min(large_enough) if large_enough else max(answered)

    async def _ramp(self, size: int) -> list[RampObservation]:
        config = self.config
        drain = config.drain if config.drain is not None else config.timeout
        data = payload(size)
        window = _Window(self.server)
        steps: list[RampObservation] = []
        try:
            for rate in config.rates:
                if not self._fits(config.step_duration + drain):
                    skipped = [f"{r:g}" for r in config.rates[len(steps):]]
                    self.notes.append(f"time budget spent: ramp steps {skipped} req/s not run")
                    break
                steps.append(await self._step(window, data, rate, config.step_duration, drain))
        finally:
            window.close()
        return steps

    async def _step(self, window: _Window, data: bytes, rate: float, duration: float,
                    drain: float) -> RampObservation:
        before = window.replies
        total = max(1, round(rate * duration))
        attempted = sent = not_sent = 0
        start = self.loop.time()
        while attempted < total:
            elapsed = self.loop.time() - start
            if elapsed >= duration:
                break
            due = min(total, int(rate * elapsed) + 1) - attempted
            for _ in range(due):
                attempted += 1
                if window.send(data) is None:
                    sent += 1
                else:
                    not_sent += 1
            window.check_refused()
            await asyncio.sleep(_RAMP_TICK)
        sending = max(self.loop.time() - start, duration)
        await window.wait(self.loop.time() + drain)
        window.check_refused()
        return RampObservation(target_rate=rate, duration=sending, sent=sent,
                               replies=window.replies - before, not_sent=not_sent)
