"""When to restart a worker process that died, and when to stop trying.

Rule: sans-IO; the supervisor passes the time in.  A slot's restart waits
``first_delay`` doubled for each restart of that slot in the last ``window``
seconds (capped at ``max_delay``), so a crash loop slows down instead of
spinning; more than ``max_restarts`` restarts of all slots within ``window``
means something is broken that restarting will not fix: give up (and let the
service manager, e.g. systemd, decide).
"""

from __future__ import annotations

from collections import deque


class RestartPolicy:
    """``delay(slot, now)``: seconds to wait before restarting ``slot``, or ``None``."""

    def __init__(
        self,
        *,
        max_restarts: int = 10,
        window: float = 60.0,
        first_delay: float = 0.1,
        max_delay: float = 5.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._history: deque[tuple[float, int]] = deque()  # (when, slot), oldest first

    def delay(self, slot: int, now: float) -> float | None:
        """A worker of ``slot`` died at ``now``: when to restart it, ``None`` to give up."""
        history = self._history
        while history and history[0][0] <= now - self.window:
            history.popleft()
        if len(history) >= self.max_restarts:
            return None
        recent = sum(1 for _, seen in history if seen == slot)
        history.append((now, slot))
        return float(min(self.max_delay, self.first_delay * 2**recent))

    def recent(self, now: float) -> int:
        """Restarts within the last ``window`` seconds."""
        return sum(1 for when, _ in self._history if when > now - self.window)
