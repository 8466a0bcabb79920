"""Rate-limited log lines, so that abuse cannot flood the log itself.

Rule: at most ``per_second`` lines per reason (with a small burst); lines
suppressed meanwhile are counted and reported on the next line that passes.
Time is passed in.
"""

from __future__ import annotations


class LogLimiter:
    def __init__(self, *, per_second: float = 1.0, burst: int = 5) -> None:
        self.per_second = per_second
        self.burst = float(burst)
        self._state: dict[str, tuple[float, float, int]] = {}  # reason -> tokens, stamp, held

    def admit(self, reason: str, now: float) -> int | None:
        """``None``: suppress this line; otherwise how many were suppressed before it."""
        tokens, stamp, held = self._state.get(reason, (self.burst, now, 0))
        tokens = min(self.burst, tokens + (now - stamp) * self.per_second)
        if tokens < 1.0:
            self._state[reason] = (tokens, now, held + 1)
            return None
        self._state[reason] = (tokens - 1.0, now, 0)
        return held
