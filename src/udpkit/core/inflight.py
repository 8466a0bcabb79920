"""How many async handler calls run at once, in all and per source.

Rule: an async handler's call holds memory until it returns, so the number running is
capped, per transport and per source (the rate-limit source key: a /32 or /64), and a
request beyond a cap is dropped and counted (``dropped_overload``) before its handler is
awaited.  One source cannot take the whole budget: past ``max_per_source`` its requests
are dropped while everyone else's go on.  Pure bookkeeping; the glue takes and releases.
"""

from __future__ import annotations

from collections.abc import Hashable

HANDLER_TIMEOUT = 30.0
"""Default seconds an async handler's call may take (``--handler-timeout``)."""
MAX_PENDING = 10_000
"""Default async handler calls running at once per transport (``--max-pending``)."""
MAX_PENDING_PER_SOURCE = 1_000
"""Default async handler calls running at once per source (``--max-pending-per-source``)."""


class InFlight:
    """Counts of calls running, with their caps."""

    __slots__ = ("_per_source", "max_per_source", "max_total", "total")

    def __init__(self, *, max_total: int, max_per_source: int) -> None:
        if max_total < 1 or max_per_source < 1:
            raise ValueError("in-flight caps must be at least 1")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.total = 0
        self._per_source: dict[Hashable, int] = {}

    def try_take(self, source: Hashable) -> bool:
        """Count one more call of ``source``; ``False`` (nothing counted) over a cap."""
        held = self._per_source.get(source, 0)
        if self.total >= self.max_total or held >= self.max_per_source:
            return False
        self._per_source[source] = held + 1
        self.total += 1
        return True

    def release(self, source: Hashable) -> None:
        held = self._per_source.get(source, 0)
        if held <= 0:
            raise ValueError(f"release without take for {source!r}")
        if held == 1:
            del self._per_source[source]
        else:
            self._per_source[source] = held - 1
        self.total -= 1

    def held_by(self, source: Hashable) -> int:
        return self._per_source.get(source, 0)
