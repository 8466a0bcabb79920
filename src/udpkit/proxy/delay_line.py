"""Hand packets over at the times the policy chose, with one timer.

Rule: a heap of (time, arrival order, action) and a single ``call_at`` armed
at its head; packets due at the same time leave in the order they came (the
arrival counter breaks ties), which asyncio's own timer heap does not promise.
The line holds at most ``max_bytes`` of payload: past that, :meth:`schedule` refuses
and the caller counts the drop, so no delay setting makes memory grow without bound.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from udpkit.timer import DeadlineTimer

Action = Callable[[], None]

DELAY_QUEUE_BYTES = 64 * 1024 * 1024
"""Payload bytes the proxy holds for later delivery, all sessions together."""


class DelayLine:
    """Actions scheduled at absolute loop times."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, max_bytes: int = DELAY_QUEUE_BYTES
    ) -> None:
        self._loop = loop
        self.max_bytes = max_bytes
        self.bytes = 0
        """Payload bytes waiting now."""
        self._heap: list[tuple[float, int, int, Action]] = []
        self._order = itertools.count()
        self._timer = DeadlineTimer(loop, self._on_timer)
        self.errors = 0
        """Actions that raised (counted, the line goes on)."""

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, action: Action, size: int) -> bool:
        """Run ``action`` (which delivers ``size`` bytes) at loop time ``at``; ``False``
        if the line is full and it was not taken."""
        if self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        heapq.heappush(self._heap, (at, next(self._order), size, action))
        return True

    def run_due(self, now: float | None = None) -> None:
        """Run every action due by ``now``, then re-arm the timer."""
        now = self._loop.time() if now is None else now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, size, action = heapq.heappop(heap)
            self.bytes -= size
            try:
                action()
            except Exception:
                self.errors += 1
        self._timer.arm(heap[0][0] if heap else None)

    def _on_timer(self, when: float) -> None:
        self.run_due(max(self._loop.time(), when))

    def close(self) -> None:
        self._timer.cancel()
        self._heap.clear()
        self.bytes = 0
