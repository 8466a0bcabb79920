"""The sans-IO accounting of a load test: what was sent, what came back, how late.

Rule: every measured request ends in exactly one of ``received`` or ``lost``
(its own timeout passed), so ``sent == received + lost`` once nothing is in
flight; replies that answer no request in flight are counted apart, never as
received: ``duplicates`` (a second reply to an answered request), ``late``
(a reply to a request already counted lost) and ``wrong`` (a reply that
answers no request ever sent).  ``reordered`` counts received replies whose
request was sent before that of a reply already received.

The glue asks :meth:`LoadCore.issue` for payloads to send, feeds received
replies in batches to :meth:`LoadCore.receive`, calls :meth:`LoadCore.expire`
at :meth:`LoadCore.next_deadline`; the time is always an argument, so tests
drive the clock by hand.  No socket, asyncio or time import here.

Latency is kept as integer microseconds in per-interval counters (a dict
increment on the hot path); :mod:`udpkit.bench` folds them into an HDR
histogram.  In open loop, latency runs from each request's *intended* send
time, so a stalled generator or server cannot hide behind coordinated
omission (Gil Tene's rule, as in wrk2).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat

from udpkit.core.errors import UsageError
from udpkit.core.matching import ReplyRule
from udpkit.core.pacing import LagAccount, merge_counts
from udpkit.core.payloads import RequestSource

_IN_FLIGHT, _ANSWERED, _LOST = 0, 1, 2

LATE_SEND = 0.002
"""An open-loop request sent more than this (seconds) after its intended time was late."""


@dataclass(frozen=True, slots=True)
class IntervalStats:
    """What happened in one interval of the run (for the time series and the plot)."""

    start: float
    """Seconds since the end of the warm-up."""
    sent: int
    received: int
    lost: int
    latency_us: Mapping[int, int]
    """Latency (whole microseconds) -> number of replies, for replies received in it."""


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """The frozen result of a run's accounting (measured requests only)."""

    sent: int = 0
    received: int = 0
    lost: int = 0
    """Requests whose timeout passed without a reply."""
    duplicates: int = 0
    late: int = 0
    """Replies to requests already counted lost."""
    wrong: int = 0
    """Replies that answer no request ever sent (after the warm-up)."""
    reordered: int = 0
    """Received replies whose request is older than one already answered."""
    in_flight: int = 0
    """Measured requests neither answered nor lost yet (0 at the end of a run)."""
    duration: float = 0.0
    """Seconds from the end of the warm-up to the end of sending or the last reply."""
    latency_us: Mapping[int, int] = field(default_factory=dict)
    """Latency (whole microseconds) -> count, all measured replies."""
    intervals: tuple[IntervalStats, ...] = ()
    late_sends: int = 0
    """Open loop: requests sent more than :data:`LATE_SEND` after their intended time."""
    max_send_lag: float = 0.0
    """Open loop: the largest delay of a send behind its intended time, in seconds."""
    interrupted: bool = False
    """The run was stopped (Ctrl-C) before its planned end: the figures are partial."""
    started_at: float | None = None
    """Wall-clock time (Unix seconds) the measurement began, set by the I/O glue (the core
    has no clock): where runs of several generators meet in time (``bench merge``)."""
    send_lag_us: Mapping[int, int] = field(default_factory=dict)
    """Open loop: each measured send's lag behind its intended time (whole
    microseconds) -> count: the generator's own error."""
    receive_lag_us: Mapping[int, int] = field(default_factory=dict)
    """Where the kernel timestamps arrivals: each measured reply's wait from its arrival
    to the generator reading it (whole microseconds) -> count."""
    paced_by: str = ""
    """Open loop: which sender kept time (``"c"``: the C paced sender; ``"python"``:
    the event loop's timers)."""

    @property
    def loss(self) -> float:
        """Lost fraction of the resolved measured requests (0..1)."""
        done = self.received + self.lost
        return self.lost / done if done else 0.0

    @property
    def throughput(self) -> float:
        """Replies received per second."""
        return self.received / self.duration if self.duration > 0 else 0.0


def percentile_of_counts(counts: Mapping[int, int], percent: float) -> int:
    """The value at ``percent`` (0..100) of a value -> count table; 0 when empty.

    The value whose rank is ``percent/100 * total`` rounded half up (at least
    1), the definition HdrHistogram uses.
    """
    total = sum(counts.values())
    if total == 0:
        return 0
    rank = max(1, int(percent * total / 100.0 + 0.5))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


class ArrivalSchedule:
    """Intended send times of an open-loop run: constant or Poisson arrivals."""

    def __init__(
        self, rate: float, *, start: float, poisson: bool = False, rng: random.Random | None = None
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise UsageError(f"--rate must be a positive number per second (got {rate:g})")
        self.rate = rate
        self.poisson = poisson
        self._rng = rng or random.Random()
        self._next = start

    def next_time(self) -> float:
        return self._next

    def due(self, now: float, limit: int = 1 << 20) -> list[float]:
        """Intended times up to ``now`` not yet handed out (at most ``limit``)."""
        out: list[float] = []
        when = self._next
        rate = self.rate
        rng = self._rng
        while when <= now and len(out) < limit:
            out.append(when)
            when += rng.expovariate(rate) if self.poisson else 1.0 / rate
        self._next = when
        return out


class LoadCore:
    """The accounting of one load generator: numbering, matching, timeouts, latency.

    ``warmup_end``: requests sent before it are not measured; ``stop_at``
    and/or ``requests``: when sending stops (time, or number of measured
    requests).  ``interval``: the width of the time series' buckets.
    """

    def __init__(
        self,
        *,
        template: RequestSource,
        rule: ReplyRule,
        timeout: float,
        start: float,
        warmup: float = 0.0,
        duration: float | None = None,
        requests: int | None = None,
        interval: float = 1.0,
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"--timeout must be > 0 (got {timeout})")
        if duration is None and requests is None:
            raise UsageError("give a --duration or a number of --requests")
        if duration is not None and not duration > 0:
            raise UsageError(f"--duration must be > 0 (got {duration})")
        if requests is not None and requests < 1:
            raise UsageError(f"--requests must be >= 1 (got {requests})")
        if warmup < 0:
            raise UsageError(f"--warmup must be >= 0 (got {warmup})")
        rule.check(template)
        self.template = template
        self.rule = rule
        self.timeout = timeout
        self.warmup_end = start + warmup
        self.stop_at = self.warmup_end + duration if duration is not None else math.inf
        self.max_requests = requests
        self.interval = interval
        self._exact = rule.exact
        self._next_seq = 0
        self._first_measured: int | None = None
        self._stopped_at: float | None = None
        self._last_reply = 0.0
        self._status = bytearray()
        # expected reply (exact rules) or seq (regex rules) -> (seq, origin time)
        self._pending: dict[object, tuple[int, float]] = {}
        self._expiry: deque[tuple[float, list[object]]] = deque()
        self._max_answered = -1
        self._interval_index = 0
        self._interval_latency: dict[int, int] = {}
        self._interval_counts = [0, 0, 0]  # sent, received, lost in the current interval
        self._intervals: list[IntervalStats] = []
        self.sent = self.received = self.lost = 0
        self.duplicates = self.late = self.wrong = self.reordered = 0
        self.send_lag = LagAccount(since=self.warmup_end)
        self.receive_lag = LagAccount()

    # -- state ---------------------------------------------------------------

    @property
    def issued(self) -> int:
        """How many requests were issued so far: the next one's sequence number."""
        return self._next_seq

    @property
    def in_flight(self) -> int:
        """Requests sent and neither answered nor expired (warm-up ones included)."""
        return len(self._pending)

    def sending(self, now: float) -> bool:
        """Whether the run still sends new requests at ``now``."""
        if self._stopped_at is not None:
            return False
        if now >= self.stop_at or (
            self.max_requests is not None and self.sent >= self.max_requests
        ):
            self._stopped_at = min(now, self.stop_at)
            return False
        return True

    def stop(self, now: float) -> None:
        """Stop sending now (Ctrl-C, or the peer refused)."""
        if self._stopped_at is None:
            self._stopped_at = now

    def finished(self, now: float) -> bool:
        """Sending is over and every request is answered or lost."""
        return not self.sending(now) and not self._pending

    def next_deadline(self) -> float | None:
        """When the oldest request in flight times out (call :meth:`expire` then)."""
        return self._expiry[0][0] if self._expiry else None

    # -- sending ---------------------------------------------------------------

    def issue(self, count: int, now: float) -> list[bytes]:
        """Closed loop: up to ``count`` new payloads sent at ``now``."""
        if count <= 0 or not self.sending(now):
            return []
        return self._issue(count, now, None)

    def issue_scheduled(self, intended: list[float], now: float) -> list[bytes]:
        """Open loop: payloads for requests meant to leave at ``intended`` times, sent
        at ``now`` (their lag is accounted here)."""
        if not intended or not self.sending(now):
            return []
        return self._issue(len(intended), now, intended)

    def issue_planned(self, intended: list[float], now: float) -> list[bytes]:
        """Open loop with a sender that keeps time itself: payloads for requests that
        will leave at ``intended`` times (all before ``stop_at``, all on one side of
        the warm-up's end), registered ``now``, before they leave.  Measured by their
        intended time; they time out ``timeout`` after the last of them; the sender
        reports when they actually left with :meth:`record_send_lag`."""
        if not intended or not self.sending(now):
            return []
        return self._issue(len(intended), now, intended, planned=True)

    def record_send_lag(self, intended: list[float], actual: float) -> None:
        """Sends meant for ``intended`` times actually left at ``actual``."""
        self.send_lag.record(intended, actual)

    def record_send_lags(
        self, intended: Sequence[float], sizes: Sequence[int], actual: Sequence[float]
    ) -> None:
        """Batches of ``sizes`` sends (``intended`` end to end) left at ``actual`` times."""
        self.send_lag.record_batches(intended, sizes, actual)

    def _issue(
        self, count: int, now: float, intended: list[float] | None, planned: bool = False
    ) -> list[bytes]:
        measured = (intended[0] if planned and intended else now) >= self.warmup_end
        if self.max_requests is not None and measured:
            count = min(count, self.max_requests - self.sent)
        start = self._next_seq
        self._next_seq = start + count
        payloads = self.template.render_range(start, count)
        if measured:
            if self._first_measured is None:
                self._first_measured = start
            self.sent += count
            self._roll(now)
            self._interval_counts[0] += count
        self._status.extend(bytes(count))
        pending = self._pending
        keys: list[object]
        if self._exact:
            expected = self.rule.expected
            keys = [expected(payload) for payload in payloads]
        else:
            keys = list(range(start, start + count))
        if intended is None:
            for offset, key in enumerate(keys):
                pending[key] = (start + offset, now)
        else:
            intended = intended[:count]
            for offset, key in enumerate(keys):
                pending[key] = (start + offset, intended[offset])
            if not planned:
                self.send_lag.record(intended, now, measured=measured)
        expires = (intended[-1] if planned and intended else now) + self.timeout
        self._expiry.append((max(now, expires), keys))
        return payloads

    # -- receiving -------------------------------------------------------------

    def receive(
        self, replies: Iterable[bytes], now: float, answered: list[int] | None = None,
        *, read_lag_us: int | None = None,
    ) -> int:
        """Account for replies received at ``now``; returns how many answered a request.

        ``answered``: if given, the sequence number of each request answered is
        appended (not those of late, duplicate or wrong replies).  ``read_lag_us``:
        the replies arrived (``now``, a kernel timestamp) this long before the generator
        read them (counted per measured reply)."""
        self._roll(now)
        return self._receive_run(replies, repeat(now), repeat(read_lag_us), now, answered)

    def receive_at(
        self, replies: Sequence[bytes], arrivals: Sequence[float],
        read_lags_us: Sequence[int] | None = None,
    ) -> int:
        """Account for replies each at its own time (``arrivals``, ascending: the
        kernel's arrival times), in one call; returns how many answered a request.

        ``read_lags_us``: how long each waited from arrival to being read.  The same
        accounting as :meth:`receive` one reply at a time, without its cost per call."""
        count = len(replies)
        if count == 0:
            return 0
        accepted = 0
        index = 0
        while index < count:
            # one run of replies within one interval of the time series
            now = arrivals[index]
            self._roll(now)
            if now < self.warmup_end:
                boundary = self.warmup_end
            else:
                boundary = self.warmup_end + (self._interval_index + 1) * self.interval
            end = index + 1
            while end < count and arrivals[end] < boundary:
                end += 1
            accepted += self._receive_run(
                replies[index:end], arrivals[index:end],
                repeat(None) if read_lags_us is None else read_lags_us[index:end],
                arrivals[end - 1], None)
            index = end
        return accepted

    def _receive_run(
        self, replies: Iterable[bytes], times: Iterable[float], lags: Iterable[int | None],
        last: float, answered: list[int] | None,
    ) -> int:
        """Match replies within one interval of the time series, each at its time, and
        count what they answered (the one matching loop of :meth:`receive` and
        :meth:`receive_at`); ``last`` is the latest of ``times``."""
        pending = self._pending
        status = self._status
        first = self._first_measured
        latency = self._interval_latency
        lag_account = self.receive_lag
        accepted = measured = reordered = 0
        max_answered = self._max_answered
        # How a reply finds its request in ``pending``, chosen once: by the reply itself
        # (exact), by its key (keyed rules: DNS), or by the number the rule reads in it.
        key_of: Callable[[bytes], object] | None
        if not self._exact:
            key_of = self.rule.seq_of_untrusted
        elif self.rule.keyed:
            key_of = self.rule.reply_key_untrusted
        else:
            key_of = None
        for reply, now, lag in zip(replies, times, lags, strict=False):  # times, lags: repeat()
            entry = pending.pop(reply if key_of is None else key_of(reply), None)
            if entry is None:
                self._unmatched(reply, now)
                continue
            seq, origin = entry
            status[seq] = _ANSWERED
            accepted += 1
            if answered is not None:
                answered.append(seq)
            if seq < max_answered:
                reordered += 1
            else:
                max_answered = seq
            if first is not None and seq >= first:
                measured += 1
                micros = int((now - origin) * 1_000_000)
                latency[micros] = latency.get(micros, 0) + 1
                if lag is not None:
                    lag_account.record_us(lag)
        self._max_answered = max_answered
        if measured:
            self.received += measured
            self.reordered += reordered
            self._interval_counts[1] += measured
            self._last_reply = max(self._last_reply, last)
        return accepted

    def _unmatched(self, reply: bytes, now: float) -> None:
        seq = self.rule.find_seq_untrusted(reply, self.template, self._next_seq)
        first = self._first_measured
        if seq is None:
            if now >= self.warmup_end:
                self.wrong += 1
            return
        if first is None or seq < first:
            return  # a stray reply to a warm-up request
        state = self._status[seq]
        if state == _ANSWERED:
            self.duplicates += 1
        elif state == _LOST:
            self.late += 1
        else:
            self.wrong += 1  # claims a request in flight but does not answer it

    # -- time ------------------------------------------------------------------

    def expire(self, now: float, expired_seqs: list[int] | None = None) -> int:
        """Count every request whose timeout has passed as lost; returns how many.

        ``expired_seqs``: if given, the sequence number of each is appended."""
        expiry = self._expiry
        pending = self._pending
        status = self._status
        first = self._first_measured
        expired = measured = 0
        while expiry and expiry[0][0] <= now:
            _, keys = expiry.popleft()
            for key in keys:
                entry = pending.pop(key, None)
                if entry is None:
                    continue
                seq = entry[0]
                status[seq] = _LOST
                expired += 1
                if expired_seqs is not None:
                    expired_seqs.append(seq)
                if first is not None and seq >= first:
                    measured += 1
        if measured:
            self._roll(now)
            self.lost += measured
            self._interval_counts[2] += measured
        return expired

    def _roll(self, now: float) -> None:
        """Close the intervals that ended before ``now``."""
        if now < self.warmup_end:
            return
        index = int((now - self.warmup_end) / self.interval)
        while index > self._interval_index:
            self._close_interval()

    def _close_interval(self) -> None:
        sent, received, lost = self._interval_counts
        self._intervals.append(
            IntervalStats(
                start=self._interval_index * self.interval,
                sent=sent,
                received=received,
                lost=lost,
                latency_us=self._interval_latency,
            )
        )
        self._interval_index += 1
        self._interval_latency = {}
        self._interval_counts = [0, 0, 0]

    @property
    def late_sends(self) -> int:
        """Measured sends more than :data:`LATE_SEND` behind their intended time."""
        return self.send_lag.late(LATE_SEND)

    @property
    def max_send_lag(self) -> float:
        return self.send_lag.worst

    # -- output ----------------------------------------------------------------

    def intervals_closed(self, now: float, since: int = 0) -> list[IntervalStats]:
        """The intervals that ended by ``now``, from number ``since`` on: what a live
        stream (``bench --json-stream``) has not written yet.  Closed intervals never
        change; :meth:`summary` returns them all, then the one still open."""
        self._roll(now)
        return self._intervals[since:]

    def summary(self, now: float) -> LoadSummary:
        """A frozen account of the measured requests so far."""
        intervals = list(self._intervals)
        sent, received, lost = self._interval_counts
        if sent or received or lost or self._interval_latency:
            intervals.append(
                IntervalStats(
                    self._interval_index * self.interval,
                    sent,
                    received,
                    lost,
                    dict(self._interval_latency),
                )
            )
        latency = merge_counts([item.latency_us for item in intervals])
        end = self._stopped_at if self._stopped_at is not None else now
        end = max(end, self._last_reply)
        first = self._first_measured
        in_flight = 0
        if first is not None:
            in_flight = sum(1 for seq, _ in self._pending.values() if seq >= first)
        return LoadSummary(
            sent=self.sent,
            received=self.received,
            lost=self.lost,
            duplicates=self.duplicates,
            late=self.late,
            wrong=self.wrong,
            reordered=self.reordered,
            in_flight=in_flight,
            duration=max(0.0, end - self.warmup_end),
            latency_us=latency,
            intervals=tuple(intervals),
            late_sends=self.late_sends,
            max_send_lag=self.max_send_lag,
            send_lag_us=dict(self.send_lag.counts),
            receive_lag_us=dict(self.receive_lag.counts),
        )
