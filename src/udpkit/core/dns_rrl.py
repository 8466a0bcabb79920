"""Response-rate limiting for a DNS responder, in the spirit of NSD's and Knot's RRL.

Rule: over UDP, a source network (a /24 or a /56) gets at most ``rate``
answers per second of each kind (the same name and type; every NXDOMAIN of
the zone; every REFUSED), so spoofed queries cannot turn the server into an
amplifier aimed at a victim, while the victim's own resolver still gets
through: every ``slip``-th answer over the limit goes out truncated (TC set,
nothing in it: small, and a real client retries over TCP, where no limit
applies); the others are dropped.  ``slip=0`` drops them all, ``slip=1`` truncates them all.
This limit works on top of udpkit's own per-source request limit
(:mod:`udpkit.core.ratelimit`), whose table it reuses: fixed memory.

Time is passed in.

https://kb.isc.org/docs/aa-00994 (the RRL design NSD and Knot follow)
"""

from __future__ import annotations

from typing import Literal

from udpkit.core.errors import UsageError
from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier

Verdict = Literal["send", "slip", "drop"]

IPV4_PREFIX, IPV6_PREFIX = 24, 56
"""NSD's and Knot's defaults: the networks that share a limit."""


class ResponseRateLimit:
    """``decide(host, bucket, now)``: send this answer, send it truncated, or drop it."""

    def __init__(self, *, rate: float, slip: int = 2, table_size: int = 65536) -> None:
        if not rate > 0:
            raise UsageError(f"--rrl-rate must be > 0 answers/s (got {rate})")
        if slip < 0:
            raise UsageError(f"--rrl-slip must be >= 0 (got {slip})")
        self.rate = rate
        self.slip = slip
        self._buckets = TokenBucketTable(rate=rate, burst=rate, size=table_size)
        self._sources = SourceClassifier(ipv4_prefix=IPV4_PREFIX, ipv6_prefix=IPV6_PREFIX)
        self._over = 0
        self.slipped = 0
        self.dropped = 0

    def decide(self, host: str, bucket: int, now: float) -> Verdict:
        source = self._sources.classify(host)[0]
        if self._buckets.allow((source, bucket), now):
            return "send"
        self._over += 1
        if self.slip and self._over % self.slip == 0:
            self.slipped += 1
            return "slip"
        self.dropped += 1
        return "drop"
