"""The sans-IO rules of open-loop pacing: when each send leaves, which sends leave
together, how late each one left, and when the generator's own error spoils a run.

Rule: this module decides; the senders carry out.  The C paced sender
(``_fastpath.Pacer``, ``src/fastpath/pacer.c``) and the pure-Python generator
both take their plan from :func:`plan_batches` and their spin and feed horizons
from :class:`PacingPolicy` (handed to C through its constructor: no constant is
spelt on both sides of the boundary); both report *actual* send times, which
:class:`LagAccount` turns into a send-lag histogram (actual - intended, whole
microseconds).  Times are arguments (seconds as floats, or integer nanoseconds
where C reads them), so tests drive the clock by hand.

Batching: consecutive intended times that all lie within ``batch_bound`` of the
first are sent in one system call, at the *last* one's intended time.  So a
batched send leaves at most ``batch_bound`` after its intended time (plus the
sender's own wake-up error, which the lag histogram shows), and never before
it.  At a rate whose gaps exceed the bound nothing is batched.

A run is flagged (:func:`generator_error`) when the send lag's p99 exceeds
:data:`LAG_FLAG_FRACTION` of the measured latency's p50: the generator's error
is then a visible part of what it reports as the server's latency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LAG_FLAG_FRACTION = 0.5
"""A run is flagged when the send lag's p99 exceeds this fraction of the latency p50."""


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    """How a paced sender waits for each deadline and groups sends."""

    spin: float = 50e-6
    """Seconds before a deadline the sender stops sleeping and spins on the clock
    (0: sleep right up to the deadline); at most :attr:`spin_share` of the mean gap
    between sends (:meth:`spin_for`)."""
    spin_share: float = 0.25
    """The largest fraction of the mean gap between sends spent spinning: at high rates
    a sender that never sleeps loses its core to the rest of the machine (and to the
    Python side of the generator) in whole scheduler slices, milliseconds late."""
    batch_bound: float = 5e-6
    """The longest (seconds) a send may wait past its intended time for later sends to
    leave in the same system call."""
    max_batch: int = 64
    """Most datagrams in one system call."""
    feed_ahead: float = 0.05
    """Seconds of schedule handed to the sender at a time (it runs dry, and falls
    behind honestly, only if the feeder stalls this long)."""
    timer_slack_ns: int = 1
    """The sender thread's timer slack (Linux ``PR_SET_TIMERSLACK``; the default,
    50 000 ns, lets the kernel wake a sleeper up to 50 us late)."""

    def __post_init__(self) -> None:
        if not self.spin >= 0 or not self.batch_bound >= 0 or not self.feed_ahead > 0:
            raise ValueError("spin and batch_bound must be >= 0, feed_ahead > 0")
        if not 0 <= self.spin_share <= 1:
            raise ValueError("spin_share must be >= 0 and <= 1")
        if self.max_batch < 1 or self.timer_slack_ns < 1:
            raise ValueError("max_batch and timer_slack_ns must be >= 1")


    def spin_for(self, rate: float) -> float:
        """The spin (seconds) of a sender at ``rate`` sends per second."""
        return min(self.spin, self.spin_share / rate) if rate > 0 else self.spin


DEFAULT_POLICY = PacingPolicy()


def plan_batches(times: Sequence[float], policy: PacingPolicy = DEFAULT_POLICY) -> list[int]:
    """Split intended send times (ascending) into batches; return each batch's size.

    A batch starts at the first time not yet planned and takes the following ones
    while they lie within ``policy.batch_bound`` of its first and it holds fewer
    than ``policy.max_batch``.  It leaves at its last member's time."""
    sizes: list[int] = []
    bound = policy.batch_bound
    most = policy.max_batch
    index = 0
    count = len(times)
    while index < count:
        first = times[index]
        end = index + 1
        while end < count and end - index < most and times[end] - first <= bound:
            end += 1
        sizes.append(end - index)
        index = end
    return sizes


def batch_send_times(times: Sequence[float], sizes: Sequence[int]) -> list[float]:
    """When each batch of :func:`plan_batches` leaves: its last member's intended time."""
    out: list[float] = []
    index = 0
    for size in sizes:
        index += size
        out.append(times[index - 1])
    return out


def wait_plan(deadline: float, now: float, policy: PacingPolicy = DEFAULT_POLICY) -> float:
    """How the sender waits for ``deadline`` at ``now``: seconds to sleep first (0: spin
    now, or send at once when the deadline has passed); then spin to the deadline."""
    return max(0.0, deadline - policy.spin - now)


def lag_us(intended: float, actual: float) -> int:
    """A send's lag in whole microseconds, rounded (0 for one that left early: clocks that
    differ by a rounding)."""
    return max(0, round((actual - intended) * 1_000_000))


class LagAccount:
    """Whole-microsecond lag -> count, for measured sends only (intended >= ``since``)."""

    def __init__(self, since: float = float("-inf")) -> None:
        self.since = since
        self.counts: dict[int, int] = {}
        self.worst = 0.0
        """The largest lag (seconds)."""

    def record(
        self, intended: Sequence[float], actual: float, *, measured: bool | None = None
    ) -> None:
        """Sends meant to leave at ``intended`` left (in one system call) at ``actual``.

        ``measured``: whether they count (the caller decided); ``None``: those meant
        for ``since`` or later."""
        if measured is False:
            return
        counts = self.counts
        since = float("-inf") if measured else self.since
        for when in intended:
            if when < since:
                continue
            lag = actual - when
            if lag > self.worst:
                self.worst = lag
            micros = max(0, round(lag * 1_000_000))
            counts[micros] = counts.get(micros, 0) + 1

    def record_batches(
        self, intended: Sequence[float], sizes: Sequence[int], actual: Sequence[float]
    ) -> None:
        """Batches of ``sizes`` sends (``intended`` end to end) left at ``actual`` times:
        :meth:`record` for each, in one call."""
        counts = self.counts
        since = self.since
        worst = self.worst
        index = 0
        for size, left in zip(sizes, actual, strict=True):
            for when in intended[index:index + size]:
                if when < since:
                    continue
                lag = left - when
                if lag > worst:
                    worst = lag
                micros = round(lag * 1_000_000) if lag > 0 else 0
                counts[micros] = counts.get(micros, 0) + 1
            index += size
        self.worst = worst

    def record_us(self, micros: int) -> None:
        """One lag measured elsewhere (e.g. arrival to read, from kernel timestamps)."""
        micros = max(0, micros)
        self.counts[micros] = self.counts.get(micros, 0) + 1
        if micros / 1_000_000 > self.worst:
            self.worst = micros / 1_000_000

    def late(self, threshold: float) -> int:
        """How many sends were more than ``threshold`` seconds late."""
        limit = threshold * 1_000_000
        return sum(count for micros, count in self.counts.items() if micros > limit)


def generator_error(lag_p99_us: float, latency_p50_us: float) -> bool:
    """Whether the generator's own error (send lag p99) spoils the latency it reports."""
    if latency_p50_us <= 0:
        return lag_p99_us > 0
    return lag_p99_us > LAG_FLAG_FRACTION * latency_p50_us


def merge_counts(tables: Sequence[Mapping[int, int]]) -> dict[int, int]:
    """Add value -> count tables."""
    out: dict[int, int] = {}
    for table in tables:
        for value, count in table.items():
            out[value] = out.get(value, 0) + count
    return out
