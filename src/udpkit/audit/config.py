"""Settings of one ``udpkit audit`` run, checked once, before any socket opens.

Rule: every field has a docstring and a default that keeps a whole run under
15 seconds (:meth:`AuditConfig.quick` under 5); :meth:`AuditConfig.check`
turns impossible settings into :class:`~udpkit.core.errors.UsageError` with a
one-line message fit for a command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from udpkit.core.audit_report import DEFAULT_LIMIT_THRESHOLD
from udpkit.core.errors import UsageError

MAX_UDP_PAYLOAD = 65507
"""Largest UDP payload over IPv4 (65535 - 20 - 8)."""

DEFAULT_SIZES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1472, 1500)
"""0 to 1500 bytes: powers of two, the largest payload of a 1500-byte IPv4 MTU, the MTU."""
DEFAULT_OVERSIZE = (1500, 9000, MAX_UDP_PAYLOAD)
"""An Ethernet MTU, a jumbo frame, the largest UDP payload."""
DEFAULT_RATES = (100.0, 1000.0, 5000.0, 20000.0)
"""Requests per second of the rate ramp's steps."""

QUICK_SIZES = (0, 1, 8, 64, 512, 1472)
QUICK_OVERSIZE = (1500, MAX_UDP_PAYLOAD)
QUICK_RATES = DEFAULT_RATES
"""The full ramp, with shorter steps: a limiter lets a burst through before it
drops anything (``udpkit serve``: 2,000 requests, then 1,000/s), and a ramp
that sends less than the burst cannot see the limit.  Shortened to 5,000/s
at most, the quick ramp sent 1,830 requests and reported UNLIMITED against a
limited server; at 0.3 s a step the 20,000/s step alone sends 6,000."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """What to send, how long to wait and how hard to push."""

    host: str = "127.0.0.1"
    """Host name or address of the service."""
    port: int = 9999
    """Its UDP port."""
    sizes: tuple[int, ...] = DEFAULT_SIZES
    """Request sizes of the sweep, in bytes (payload ``a``, ``b``... repeated)."""
    probes: int = 3
    """Requests sent per size (and per empty / oversized datagram)."""
    timeout: float = 0.25
    """Seconds each size waits for its replies."""
    settle: float = 0.02
    """Seconds to keep listening after the last expected reply, for extra datagrams."""
    empty: bool = True
    """Send empty datagrams."""
    oversize: tuple[int, ...] = DEFAULT_OVERSIZE
    """Sizes of the oversized datagrams (at most 65507)."""
    rates: tuple[float, ...] = DEFAULT_RATES
    """Requests per second of the ramp's steps, rising; empty to skip the ramp."""
    step_duration: float = 0.6
    """Seconds each ramp step sends for."""
    drain: float | None = None
    """Seconds after each ramp step to collect late replies (default: ``timeout``)."""
    ramp_size: int | None = None
    """Bytes of each ramp request (default: the smallest answered size >= 8 of the sweep)."""
    threshold: float = DEFAULT_LIMIT_THRESHOLD
    """A ramp step answering less than this fraction is limited."""
    max_time: float = 15.0
    """Seconds the whole run may take; phases that no longer fit are skipped and noted."""

    @classmethod
    def quick(cls, **changes: object) -> AuditConfig:
        """Fewer sizes, probes and steps: a run under 5 seconds."""
        base = cls(sizes=QUICK_SIZES, probes=2, timeout=0.2, oversize=QUICK_OVERSIZE,
                   rates=QUICK_RATES, step_duration=0.3, max_time=5.0)
        return replace(base, **changes)  # type: ignore[arg-type]

    def check(self) -> AuditConfig:
        """Return the config with defaults filled in, or raise :class:`UsageError`."""
        if not 0 < self.port < 65536:
            raise UsageError(f"port must be between 1 and 65535 (got {self.port})")
        for size in (*self.sizes, *self.oversize):
            if not 0 <= size <= MAX_UDP_PAYLOAD:
                raise UsageError(f"request sizes must be in 0..{MAX_UDP_PAYLOAD} (got {size})")
        if self.probes < 1:
            raise UsageError(f"--probes must be >= 1 (got {self.probes})")
        for name, value in (("--timeout", self.timeout), ("--step-duration", self.step_duration),
                            ("--max-time", self.max_time)):
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{name} must be a positive number of seconds (got {value:g})")
        if not (self.settle >= 0 and math.isfinite(self.settle)):
            raise UsageError(f"settle must be >= 0 (got {self.settle:g})")
        if self.drain is not None and not (self.drain >= 0 and math.isfinite(self.drain)):
            raise UsageError(f"drain must be >= 0 (got {self.drain:g})")
        for rate in self.rates:
            if not (rate > 0 and math.isfinite(rate)):
                raise UsageError(f"--rates must be positive requests per second (got {rate:g})")
        if list(self.rates) != sorted(self.rates):
            raise UsageError("--rates must rise step by step")
        if self.ramp_size is not None and not 0 <= self.ramp_size <= MAX_UDP_PAYLOAD:
            raise UsageError(f"--ramp-size must be in 0..{MAX_UDP_PAYLOAD} (got {self.ramp_size})")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"--threshold must be in (0, 1] (got {self.threshold:g})")
        return replace(self, drain=self.timeout if self.drain is None else self.drain)


def parse_sizes(text: str, *, option: str = "--sizes") -> tuple[int, ...]:
    """``"0,1,8,1472"`` as sizes in bytes; empty text is no sizes."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated byte counts (got {text!r})") from None


def parse_rates(text: str) -> tuple[float, ...]:
    """``"100,1000,5000"`` as requests per second; empty text skips the ramp."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--rates takes comma-separated requests per second (got {text!r})") \
            from None
