"""One asyncio timer for a sans-IO core's next deadline.

Rule: the I/O glue arms one timer, never one per request or packet, and
re-arms it only when the deadline changes.  The callback is given the
deadline it was armed for, since the loop may fire a hair early (its clock
resolution).  Used by the client, the load generators, the proxy's delay line
and the fake network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    """``arm(when)`` schedules ``callback(when)`` at loop time ``when``."""

    __slots__ = ("_callback", "_handle", "_loop", "when")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], object]
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.when: float | None = None
        """The deadline armed, or ``None``."""

    def arm(self, when: float | None) -> None:
        """Fire at ``when`` instead of any earlier arming; ``None`` disarms."""
        if when == self.when:
            return
        self.cancel()
        if when is not None:
            self.when = when
            self._handle = self._loop.call_at(when, self._fire)

    def arm_earlier(self, when: float) -> None:
        """Fire at ``when`` unless already armed for then or earlier.

        For glue that re-computes its deadline whenever the timer fires, so a
        later deadline never needs a cancel and a new handle.
        """
        if self.when is None or when < self.when:
            self.arm(when)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.when = None

    def _fire(self) -> None:
        when = self.when
        self._handle = None
        self.when = None
        assert when is not None
        self._callback(when)
