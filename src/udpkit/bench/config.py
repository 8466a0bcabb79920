"""Settings of one ``udpkit bench`` run, checked once, before any socket opens.

Rule: every field has a docstring and a safe default; :meth:`BenchConfig.check`
turns impossible settings into :class:`~udpkit.core.errors.UsageError` with a
one-line message fit for a command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from udpkit.apps import DEFAULT_APP, reply_rule, request_source
from udpkit.core.errors import UsageError
from udpkit.core.framing import FramingName
from udpkit.core.handler import TransportName
from udpkit.core.matching import ReplyRule
from udpkit.core.payloads import DEFAULT_TEMPLATE, RequestSource


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    """What to load, how hard and for how long."""

    host: str = "127.0.0.1"
    """Host name or address of the service."""
    port: int = 9999
    """Its port (UDP or TCP)."""
    transport: TransportName = "udp"
    """``udp`` or ``tcp`` (one request per line, the reply one line)."""
    tcp_framing: FramingName = "line"
    """TCP: ``line``, or ``len16`` (each message after its length in two bytes); ``raw``
    cannot be pipelined."""
    concurrency: int = 64
    """Closed loop: requests kept in flight (UDP), split over the processes."""
    rate: float | None = None
    """Open loop: requests per second; ``None`` runs a closed loop."""
    poisson: bool = False
    """Open loop: Poisson arrivals (exponential gaps) instead of a constant rate."""
    duration: float | None = None
    """Seconds of measured load after the warm-up; 10 when neither this nor ``requests``."""
    requests: int | None = None
    """Measured requests to send (stops at whichever of duration/requests comes first)."""
    warmup: float = 1.0
    """Seconds of load before measuring starts."""
    timeout: float = 1.0
    """Per-request timeout: a request unanswered after this is lost; the run goes on."""
    template: str = DEFAULT_TEMPLATE
    """Payload template; ``{seq}`` becomes the request's number."""
    size: int = 0
    """Pad payloads with ``x`` up to this many bytes."""
    expect: str = DEFAULT_APP
    """Which reply answers a request: a built-in app's name (:data:`udpkit.apps.REPLY_RULES`)
    or a regex with ``{seq}``."""
    queries: tuple[str, ...] | None = None
    """Lines of a query file in the app's own format (``--expect dns``: dnsperf's
    ``name TYPE``), sent in turn instead of the payload template."""
    connections: int = 1
    """TCP: connections to open."""
    depth: int | None = None
    """TCP closed loop: requests pipelined per connection (default: concurrency / connections)."""
    procs: int = 1
    """Generator processes; their histograms are merged."""
    batch: int = 64
    """UDP: most datagrams sent in one system call (GSO) or read per wake-up."""
    gso: bool = True
    """UDP on Linux: send equal-sized payloads as one GSO super-datagram."""
    interval: float | None = None
    """Seconds per point of the time series; ``None`` picks from the duration."""
    seed: int | None = None
    """Seed of the Poisson arrivals (reproducible runs)."""

    def check(self) -> BenchConfig:
        """Return the config with defaults filled in, or raise :class:`UsageError`."""
        if self.transport not in ("udp", "tcp"):
            raise UsageError(f"transport must be 'udp' or 'tcp' (got {self.transport!r})")
        if not 0 < self.port < 65536:
            raise UsageError(f"port must be between 1 and 65535 (got {self.port})")
        if self.rate is not None and (not self.rate > 0 or math.isinf(self.rate)):
            raise UsageError(f"--rate must be a positive number of requests per second "
                             f"(got {self.rate:g})")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1 (got {self.concurrency})")
        if self.duration is not None and not self.duration > 0:
            raise UsageError(f"--duration must be > 0 (got {self.duration:g})")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"--requests must be >= 1 (got {self.requests})")
        if not self.warmup >= 0:
            raise UsageError(f"--warmup must be >= 0 (got {self.warmup:g})")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be > 0 (got {self.timeout:g})")
        if self.connections < 1:
            raise UsageError(f"--connections must be >= 1 (got {self.connections})")
        if self.depth is not None and self.depth < 1:
            raise UsageError(f"--depth must be >= 1 (got {self.depth})")
        if self.procs < 1:
            raise UsageError(f"--procs must be >= 1 (got {self.procs})")
        if not 1 <= self.batch <= 1024:
            raise UsageError(f"--batch must be between 1 and 1024 (got {self.batch})")
        if self.interval is not None and not self.interval > 0:
            raise UsageError(f"interval must be > 0 (got {self.interval:g})")
        template, rule = self.payloads()
        rule.check(template)
        if self.tcp_framing not in ("line", "len16"):
            raise UsageError(f"--tcp-framing must be 'line' or 'len16' (got {self.tcp_framing!r};"
                             " bench pipelines requests, which raw framing cannot)")
        if self.transport == "tcp" and rule.keyed and self.tcp_framing != "len16":
            raise UsageError(f"--expect {self.expect} over TCP needs --tcp-framing len16")
        line = self.transport == "tcp" and self.tcp_framing == "line"
        if line and (b"\n" in template.render(0) or b"\r" in template.render(0)):
            raise UsageError("a TCP payload cannot contain a line break (one request per line)")
        duration = self.duration
        if duration is None and self.requests is None:
            duration = 10.0
        interval = self.interval
        if interval is None:
            interval = 1.0 if duration is None or duration >= 20 else max(0.05, duration / 20)
        depth = self.depth
        if depth is None:
            depth = max(1, math.ceil(self.concurrency / self.connections))
        return replace(self, duration=duration, interval=interval, depth=depth)

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def payloads(self) -> tuple[RequestSource, ReplyRule]:
        return (request_source(self.expect, self.template, size=self.size, lines=self.queries),
                reply_rule(self.expect))

    def share(self, index: int, parts: int) -> BenchConfig:
        """This process's part of the load when ``parts`` processes share it."""
        concurrency = self.concurrency // parts + (1 if index < self.concurrency % parts else 0)
        rate = self.rate / parts if self.rate is not None else None
        requests = None
        if self.requests is not None:
            requests = self.requests // parts + (1 if index < self.requests % parts else 0)
        seed = None if self.seed is None else self.seed + index
        connections = max(1, self.connections // parts)
        return replace(
            self,
            procs=1,
            concurrency=max(1, concurrency),
            rate=rate,
            requests=max(1, requests) if requests is not None else None,
            seed=seed,
            connections=connections,
        )
