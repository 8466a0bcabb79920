"""``udpkit bench --replay FILE``: replay the requests of a capture against a service.

Rule: which datagrams are requests is decided once, here, in
:func:`select_requests`: the UDP datagrams of the file sent *to* the replay
port (``--replay-port``, by default the target's port), in file order; every
other datagram (the recorded replies, other traffic) is counted, not sent.
Each recorded client address (host and port) is a flow, replayed from its
own socket (at most :data:`MAX_FLOWS`; more are folded onto them).  The pace,
the matching and the accounting are the sans-IO :class:`ReplayCore`; this
module only opens sockets, moves bytes and arms one timer, like
:mod:`udpkit.bench.udp_generator`.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from udpkit.apps import reply_rule
from udpkit.bench.config import BenchConfig
from udpkit.bench.generator import Generator
from udpkit.bench.result import BenchResult
from udpkit.bench.stream import LiveIntervals
from udpkit.bench.udp_generator import open_udp_socket, read_waiting
from udpkit.capture.reader import Capture, CaptureError, read_capture_untrusted
from udpkit.client.aio import resolve_address
from udpkit.core.errors import UsageError
from udpkit.core.handler import Address
from udpkit.core.load_stats import IntervalStats
from udpkit.core.matching import ANY, ReplyRule
from udpkit.core.replay import ReplayCore, ReplayPlan
from udpkit.signals import ctrl_c

MAX_FLOWS = 256
"""Client flows replayed from sockets of their own; flows beyond share them."""
ORDER = "order"
"""``--expect order``: a reply answers the oldest request in flight on its flow."""
_READS_PER_WAKEUP = 256


def parse_speed(text: str) -> float | None:
    """``--speed``: a factor of the recorded pace (``1``, ``2.5``) or ``max``."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise UsageError(f"--speed must be a positive number or 'max' (got {text!r})") from None
    if not (speed > 0 and math.isfinite(speed)):
        raise UsageError(f"--speed must be a positive number or 'max' (got {text!r})")
    return speed


def replay_rule(expect: str) -> ReplyRule:
    """``order`` (the oldest request in flight on the flow), or any ``--expect`` rule."""
    return ANY if expect == ORDER else reply_rule(expect)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayConfig:
    """What to replay, against what, how fast."""

    path: str
    """The pcap or pcapng file."""
    host: str = "127.0.0.1"
    port: int = 9999
    """The target; its port is also the default replay port."""
    replay_port: int | None = None
    """Replay the datagrams sent to this port in the capture (default: ``port``)."""
    speed: float | None = 1.0
    """Factor of the recorded pace; ``None``: as fast as ``concurrency`` allows."""
    expect: str = ORDER
    """``order``, or a reply rule of ``--expect`` (app name, ``any``, ``{seq}`` regex)."""
    timeout: float = 1.0
    concurrency: int = 64
    """``speed=None``: requests in flight."""
    requests: int | None = None
    """Replay only the first this many requests."""
    interval: float = 1.0
    """Seconds per point of the time series."""

    def check(self) -> ReplayConfig:
        if not 0 < self.port < 65536:
            raise UsageError(f"port must be between 1 and 65535 (got {self.port})")
        if self.replay_port is not None and not 0 < self.replay_port < 65536:
            raise UsageError(f"--replay-port must be between 1 and 65535 "
                             f"(got {self.replay_port})")
        if self.speed is not None and not (self.speed > 0 and math.isfinite(self.speed)):
            raise UsageError(f"--speed must be a positive number or 'max' (got {self.speed})")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be > 0 (got {self.timeout:g})")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1 (got {self.concurrency})")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"--requests must be >= 1 (got {self.requests})")
        replay_rule(self.expect)
        return self

    @property
    def selected_port(self) -> int:
        return self.replay_port if self.replay_port is not None else self.port


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """What was taken from the capture file."""

    path: str
    format: str
    link_type: str
    port: int
    """The replay port: datagrams sent to it are the requests."""
    requests: int
    """Requests replayed."""
    flows: int
    """Client addresses that sent them (sockets used: at most :data:`MAX_FLOWS`)."""
    span: float
    """Seconds from the first to the last request, as recorded."""
    other_datagrams: int
    """UDP datagrams of the file not sent to the replay port (the replies among them)."""
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Packets that are no UDP datagram, by reason."""

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{why} {count}" for why, count in sorted(self.skipped.items()))
        return (f"replay of {self.path} ({self.format}, {self.link_type}): {self.requests} "
                f"datagrams to port {self.port} from {self.flows} client(s) over "
                f"{self.span:.3f} s; {self.other_datagrams} other datagrams and {skipped} "
                f"other packets not sent" + (f" ({reasons})" if reasons else ""))

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path, "format": self.format, "link_type": self.link_type,
            "port": self.port, "requests": self.requests, "flows": self.flows,
            "span_s": self.span, "other_datagrams": self.other_datagrams,
            "skipped": dict(self.skipped),
        }


def select_requests(capture: Capture, port: int, *,
                    requests: int | None = None) -> tuple[ReplayPlan, ReplaySource]:
    """The datagrams of ``capture`` sent to ``port``, as a plan; :class:`CaptureError`
    (naming the ports the file does have) when there are none."""
    chosen = [d for d in capture.datagrams if d.destination[1] == port]
    if not chosen:
        ports = Counter(d.destination[1] for d in capture.datagrams)
        seen = ", ".join(f"{p} ({n})" for p, n in ports.most_common(5))
        raise CaptureError(
            f"{capture.path}: no UDP datagram to port {port} in the file "
            + (f"(datagrams by destination port: {seen}; choose one with --replay-port)"
               if seen else f"({capture.packets} packets, none of them UDP)"))
    plan = ReplayPlan.build(((d.time, d.source, d.payload) for d in chosen),
                            max_flows=MAX_FLOWS).limited(requests)
    used = plan.items
    source = ReplaySource(
        path=capture.path, format=capture.format, link_type=capture.link_type_name,
        port=port, requests=len(used),
        flows=len({d.source for d in chosen[:len(used)]}),
        span=used[-1].offset if used else 0.0,
        other_datagrams=len(capture.datagrams) - len(chosen),
        skipped=dict(capture.skipped),
    )
    return plan, source


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A replay's bench result and what it replayed."""

    result: BenchResult
    source: ReplaySource
    speed: float | None

    def as_dict(self) -> dict[str, Any]:
        """The bench document, its settings those of a replay."""
        document = self.result.as_dict()
        config = self.result.config
        document["mode"] = "replay"
        document["config"] = {
            "speed": self.speed if self.speed is not None else "max",
            "concurrency": config.concurrency if self.speed is None else None,
            "timeout_s": config.timeout,
            "expect": config.expect,
            "requests": config.requests,
        }
        document["latency_from"] = "send time" if self.speed is None else "intended send time"
        document["fell_behind"] = self.fell_behind
        document["replay"] = self.source.as_dict()
        return document

    @property
    def fell_behind(self) -> bool:
        summary = self.result.summary
        return self.speed is not None and summary.late_sends > 0.01 * max(summary.sent, 1)


def load(config: ReplayConfig) -> tuple[ReplayPlan, ReplaySource]:
    """Read and select, before any socket opens (every error is a :class:`CaptureError`)."""
    config = config.check()
    capture = read_capture_untrusted(config.path)
    return select_requests(capture, config.selected_port, requests=config.requests)


def run_replay(config: ReplayConfig, *, handle_signals: bool = False) -> ReplayResult:
    """Replay ``config.path`` against ``config.host:port``; the result and its source."""
    plan, source = load(config)
    return asyncio.run(replay_async(config, plan, source, handle_signals=handle_signals))


async def replay_async(config: ReplayConfig, plan: ReplayPlan, source: ReplaySource, *,
                       handle_signals: bool = False,
                       on_start: Callable[[], None] | None = None,
                       on_interval: Callable[[IntervalStats], None] | None = None,
                       ) -> ReplayResult:
    """Replay ``plan``; ``on_start`` is called once Ctrl-C is handled (a header line),
    ``on_interval`` with each interval of the time series as it closes, then the rest
    at the end (``--json-stream``): together exactly the result's intervals."""
    server = await resolve_address(config.host, config.port, socket.SOCK_DGRAM)
    loop = asyncio.get_running_loop()
    core = ReplayCore(plan, rule=replay_rule(config.expect), timeout=config.timeout,
                      start=loop.time(), speed=config.speed, concurrency=config.concurrency,
                      interval=config.interval)
    generator = _ReplayGenerator(core, server)
    live = LiveIntervals(core.intervals_closed, core.start, config.interval, on_interval)
    with live, ctrl_c(generator.stop, install=handle_signals) as signals:
        if on_start is not None:
            on_start()
        await generator.run()
    summary = core.summary(loop.time())
    live.finish(summary.intervals)
    if signals.seen:
        summary = replace(summary, interrupted=True)
    bench_config = BenchConfig(
        host=config.host, port=config.port, transport="udp", concurrency=config.concurrency,
        requests=len(plan.items), warmup=0.0, timeout=config.timeout, expect=config.expect,
        interval=config.interval)
    return ReplayResult(BenchResult.build(bench_config, summary), source, config.speed)


class _ReplayGenerator(Generator):
    """One connected socket per flow; the core says what to send when."""

    core: ReplayCore

    def __init__(self, core: ReplayCore, server: Address) -> None:
        super().__init__(server)
        self.core = core
        self._sockets: list[socket.socket] = []
        self._refused = False

    async def _start(self) -> None:
        for flow in range(max(self.core.plan.flows, 1)):
            sock = open_udp_socket(self.server)
            self._sockets.append(sock)
            self._loop.add_reader(sock.fileno(), self._on_readable, flow)
        self._pump(self._loop.time())

    def close(self) -> None:
        super().close()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        self._sockets.clear()

    def _on_readable(self, flow: int) -> None:
        sock = self._sockets[flow]
        replies, refused = read_waiting(sock, _READS_PER_WAKEUP)
        if refused:
            self._refused = True
        now = self._loop.time()
        if replies:
            self.replies += len(replies)
            self.core.receive(flow, replies, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        if self._done.done():
            return
        core = self.core
        if self._refused and self.replies == 0:
            self._fail_refused()
            return
        core.expire(now)
        for flow, payload in core.due(now):
            self._send(flow, payload)
        if core.finished():
            self._done.set_result(None)
            return
        candidates = [when for when in (core.next_send(), core.next_deadline())
                      if when is not None]
        if candidates:
            self._timer.arm_earlier(max(min(candidates), now))

    def _send(self, flow: int, payload: bytes) -> None:
        """Send at once; a full socket buffer or an error loses the request (it times
        out and is counted lost, as the network would lose it)."""
        try:
            self._sockets[flow].send(payload)
        except ConnectionRefusedError:
            self._refused = True
        except OSError:
            pass
