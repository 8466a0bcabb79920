"""Adaptive busy polling of one UDP socket: when to spin, when to yield, when to sleep.

Rule: this object alone decides; the glue (:mod:`udpkit.server.udp`) only reports
facts (a wake-up or a spin found ``n`` datagrams, at ``now``) and does what it is
told.  A server that is asleep waits in the event loop like any other; a wake-up
that found work starts spinning: the socket leaves the loop's interest set and is
polled without blocking, so the next request of a steady stream is taken the
moment it lands instead of after a scheduler wake-up.  The spin goes on while
work keeps coming; ``duration`` after the last datagram it stops and the socket
goes back to the loop (an idle server sleeps: it spins only after work, and never
longer than ``duration`` past it).  The loop keeps its turn: no spin lasts longer
than a slice (``duration``, at most :data:`MAX_SLICE`) before the loop runs once
(TCP, timers, signals), and the spin resumes after it.

Time is always passed in, so tests drive the clock by hand.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

MAX_SLICE = 100e-6
"""The longest the event loop waits for its turn while a UDP socket is polled (s)."""

MAX_DURATION = 0.01
"""The longest spin after the last datagram a server may be asked for (s): beyond a
few hundred microseconds spinning buys nothing a wake-up does not."""


class Action(enum.Enum):
    """What the glue does next."""

    SLEEP = "sleep"
    """Stop polling; the socket goes (back) to the event loop's interest set."""
    SPIN = "spin"
    """Poll the socket now, without blocking, for at most :meth:`BusyPoll.spin_time`."""
    YIELD = "yield"
    """Give the event loop one turn, then call :meth:`BusyPoll.resumed`."""


@dataclass
class BusyPollStats:
    """What the poller did (for benchmarks and tests; not a drop counter)."""

    spins: int = 0
    """Times spinning started after a wake-up that found work."""
    yields: int = 0
    """Turns given to the event loop in the middle of a spin."""
    sleeps: int = 0
    """Times the socket went back to the event loop after ``duration`` without work."""
    polls: int = 0
    """Spin slices run (each a bounded non-blocking poll of the socket)."""
    found_spinning: int = 0
    """Datagrams a spin took that would otherwise have needed a wake-up."""


def check_duration(seconds: float) -> float:
    """``seconds`` if it is a valid busy-poll duration (0: off), else ``ValueError``."""
    if not (math.isfinite(seconds) and 0.0 <= seconds <= MAX_DURATION):
        raise ValueError(
            f"busy-poll duration must be 0 (off) .. {MAX_DURATION * 1e3:g} ms (got {seconds!r} s)"
        )
    return seconds


class BusyPoll:
    """The spin / yield / sleep decisions of one socket (see the module's rule)."""

    def __init__(self, duration: float, *, max_slice: float = MAX_SLICE) -> None:
        self.duration = check_duration(duration)
        """Spin this long past the last datagram before sleeping; 0: never spin."""
        self.slice = min(self.duration, max_slice)
        """The longest one spin runs before the event loop gets a turn."""
        self.spinning = False
        """Whether the socket is out of the loop's interest set, polled by the glue."""
        self.stats = BusyPollStats()
        self._idle_until = 0.0  # last datagram + duration
        self._slice_ends = 0.0

    @property
    def enabled(self) -> bool:
        return self.duration > 0

    def woke(self, now: float, found: int) -> Action:
        """The event loop woke the socket and a read took ``found`` datagrams."""
        if self.spinning:
            return Action.SPIN
        if not self.enabled or found <= 0:
            return Action.SLEEP
        self.spinning = True
        self.stats.spins += 1
        self._idle_until = now + self.duration
        self._slice_ends = now + self.slice
        return Action.SPIN

    def polled(self, now: float, found: int) -> Action:
        """A spin ended at ``now`` having taken ``found`` datagrams (0: none came)."""
        if not self.spinning:
            return Action.SLEEP
        self.stats.polls += 1
        if found > 0:
            self.stats.found_spinning += found
            self._idle_until = now + self.duration
        if now >= self._idle_until:
            return self._sleep()
        if now >= self._slice_ends:
            self.stats.yields += 1
            return Action.YIELD
        return Action.SPIN

    def resumed(self, now: float) -> Action:
        """The event loop ran its turn after a :attr:`Action.YIELD`; a new slice starts."""
        if not self.spinning:
            return Action.SLEEP
        if now >= self._idle_until:  # the loop's turn outlasted the spin
            return self._sleep()
        self._slice_ends = now + self.slice
        return Action.SPIN

    def spin_time(self, now: float) -> float:
        """How long the next spin may poll before it must report (s, >= 0)."""
        return max(0.0, min(self._slice_ends, self._idle_until) - now)

    def stop(self) -> None:
        """The socket stops being served (shutdown): no more spinning."""
        self.spinning = False

    def _sleep(self) -> Action:
        self.spinning = False
        self.stats.sleeps += 1
        return Action.SLEEP
