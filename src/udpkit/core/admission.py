"""Whether a request from a source may be served: access lists, then rate limit.

Rule: one decision per request, in a fixed order (deny/allow first, then the
source's token bucket); the verdict names the counter the request lands in.
"""

from __future__ import annotations

from typing import Literal

from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier

Verdict = Literal["denied", "rate_limited"] | None
ConstantVerdict = Literal["serve", "denied"] | None

SERVE: Literal["serve"] = "serve"
"""A source whose requests are always served (permitted, never rate limited)."""
DENIED: Literal["denied"] = "denied"
"""A source the access lists refuse: the verdict, the counter's and the log's reason."""
RATE_LIMITED: Literal["rate_limited"] = "rate_limited"
"""A request over its source's rate: the verdict, the counter's and the log's reason."""
AMPLIFICATION = "amplification"
"""A UDP reply over ``max_amplification`` times its request: the log's reason."""

TOKENS_PER_GRANT = 16
"""Tokens a fast path asks :meth:`Admission.take` for at once, then spends one a
request: one call into Python per grant, not per request."""


class Admission:
    """``check(host, now)``: ``None`` to serve, else the reason to drop."""

    __slots__ = ("classifier", "limiter")

    def __init__(self, classifier: SourceClassifier, limiter: TokenBucketTable | None) -> None:
        self.classifier = classifier
        self.limiter = limiter

    def check(self, host: str, now: float) -> Verdict:
        key, permitted, exempt = self.classifier.classify(host)
        if not permitted:
            return DENIED
        limiter = self.limiter
        if limiter is None or exempt or limiter.allow(key, now):
            return None
        return RATE_LIMITED

    def constant_verdict(self, host: str) -> ConstantVerdict:
        """What ``check`` will say for ``host`` whatever the time, or ``None`` if it varies.

        The access lists and the exemption depend only on the address, so a
        caller may remember ``"serve"`` (permitted and not rate limited) or
        ``"denied"`` per source and skip ``check``; ``None`` means the rate
        limit applies and ``check`` must be asked every time.
        """
        _, permitted, exempt = self.classifier.classify(host)
        if not permitted:
            return DENIED
        if self.limiter is None or exempt:
            return SERVE
        return None

    def take(self, host: str, now: float, want: int) -> int:
        """Tokens granted to ``host`` (up to ``want``); 0 means rate limited.

        Only for sources whose :meth:`constant_verdict` is ``None`` (permitted,
        limited): the caller spends the grant one request at a time.
        """
        key, permitted, exempt = self.classifier.classify(host)
        if not permitted:
            return 0
        if self.limiter is None or exempt:
            return want
        return self.limiter.take(key, now, want)

    def refill_time(self, host: str, now: float, want: int) -> float:
        """Seconds until ``host``'s bucket holds ``want`` tokens (at most its burst);
        0 if it is not limited."""
        key, permitted, exempt = self.classifier.classify(host)
        if self.limiter is None or exempt or not permitted:
            return 0.0
        return self.limiter.refill_time(key, now, want)

    def permitted(self, host: str) -> bool:
        return self.classifier.classify(host)[1]

    def source_key(self, host: str) -> tuple[object, bool]:
        """The rate-limit key of ``host`` and whether it is exempt from limits."""
        key, _, exempt = self.classifier.classify(host)
        return key, exempt
