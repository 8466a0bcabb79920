"""When a client retries and when it gives up: one deadline, many attempts.

Rule: the overall deadline is computed once, when the request starts; every
attempt waits for what its backoff allows but never past that deadline.  Time
is always passed in, so tests drive the clock by hand.

Attempt ``k`` (0-based) waits ``first * backoff**k`` seconds, capped at
``max_wait``, times a uniform jitter factor in ``[1 - jitter, 1 + jitter]``
(so retransmissions of many clients do not synchronise).  The last attempt
waits until the deadline.  By default ``first`` is chosen so that the nominal
waits of all attempts fill the deadline exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from udpkit.core.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long a request may take and how it is retried."""

    timeout: float = 5.0
    """Overall deadline of one request, in seconds, all attempts included."""
    retries: int = 3
    """Retransmissions after the first attempt (UDP), or reconnections (TCP)."""
    first_wait: float | None = None
    """Wait of the first attempt; ``None``: chosen so the attempts fill ``timeout``."""
    backoff: float = 2.0
    """Factor by which each attempt's wait grows."""
    max_wait: float = 30.0
    """Cap on one attempt's wait, before jitter."""
    jitter: float = 0.1
    """Relative jitter of each wait, 0 for none."""

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise UsageError(f"timeout must be > 0 (got {self.timeout})")
        if self.retries < 0:
            raise UsageError(f"retries must be >= 0 (got {self.retries})")
        if self.backoff < 1:
            raise UsageError(f"backoff must be >= 1 (got {self.backoff})")
        if not 0 <= self.jitter < 1:
            raise UsageError(f"jitter must be in [0, 1) (got {self.jitter})")
        if self.first_wait is not None and not self.first_wait > 0:
            raise UsageError(f"first_wait must be > 0 (got {self.first_wait})")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def nominal_wait(self, attempt: int) -> float:
        """The un-jittered wait of attempt ``attempt`` (0-based)."""
        first = self.first_wait
        if first is None:
            total = sum(self.backoff**k for k in range(self.attempts))
            first = self.timeout / total
        return float(min(first * self.backoff**attempt, self.max_wait))


class RetrySchedule:
    """The retry state of one request: the deadline, attempts made, next timer."""

    __slots__ = ("_rng", "attempts", "deadline", "policy", "started", "timer")

    def __init__(self, policy: RetryPolicy, *, now: float, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self.started = now
        self.deadline = now + policy.timeout
        self.attempts = 0
        self.timer = now
        """When the current attempt gives up (or, before the first, when to send)."""

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def can_retry(self, now: float) -> bool:
        return self.attempts < self.policy.attempts and now < self.deadline

    def start_attempt(self, now: float) -> float:
        """Record an attempt sent at ``now``; return when it times out."""
        policy = self.policy
        if self.attempts + 1 >= policy.attempts:
            wait = self.remaining(now)  # the last attempt uses what is left
        else:
            wait = policy.nominal_wait(self.attempts)
            if policy.jitter:
                wait *= self._rng.uniform(1 - policy.jitter, 1 + policy.jitter)
        self.attempts += 1
        self.timer = min(now + wait, self.deadline)
        return self.timer
