"""The sans-IO accounting of a replay: recorded requests out, replies matched, timeouts.

Rule: every replayed request ends in exactly one of ``received`` or ``lost``
(its timeout passed), so ``sent == received + lost`` at the end; a reply that
answers no request in flight is ``duplicates``, ``late`` or ``wrong``, never
received, as in :mod:`udpkit.core.load_stats`, whose :class:`LoadSummary` this
core produces, so the bench report, ``--json`` and ``--slo`` read a replay as
any other run.

What is replayed is a :class:`ReplayPlan`: the client-to-server payloads of a
capture, each with its offset from the first one and its *flow* (the client
address that sent it, numbered).  The glue sends each flow from its own
socket, so the service sees as many clients as the capture had.  Which
request a reply answers is decided per flow by a :class:`ReplyRule`: the
oldest request in flight that the rule says it answers (``order``, which is
:data:`~udpkit.core.matching.ANY`, takes the oldest whatever the reply).

Pace: ``speed`` scales the recorded gaps (``1.0`` the recorded pace, ``2.0``
twice as fast); then latency runs from each request's intended send time
(coordinated omission, as in open-loop bench).  ``speed=None`` sends as fast
as ``concurrency`` (requests in flight) allows, latency from the send.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from udpkit.core.errors import UsageError
from udpkit.core.load_stats import LATE_SEND, IntervalStats, LoadSummary
from udpkit.core.matching import PendingTable, ReplyRule
from udpkit.core.pacing import merge_counts


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """One request to replay."""

    offset: float
    """Seconds after the first request of the capture (recorded pace)."""
    flow: int
    """Index of the client flow that sent it (its own socket)."""
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """The requests of a replay, in recorded order, and the flows that sent them."""

    items: tuple[ReplayItem, ...]
    flows: int
    """How many client flows (sockets)."""

    @classmethod
    def build(cls, requests: Iterable[tuple[float, object, bytes]], *,
              max_flows: int = 256) -> ReplayPlan:
        """From ``(time, client, payload)`` in file order: offsets from the earliest
        time (times out of order keep their order, offset clamped at the previous
        one), flows numbered in order of appearance, folded onto ``max_flows``."""
        flows: dict[object, int] = {}
        items: list[ReplayItem] = []
        first: float | None = None
        previous = 0.0
        for when, client, payload in requests:
            if first is None:
                first = when
            offset = max(previous, when - first)
            if not math.isfinite(offset):
                offset = previous
            previous = offset
            flow = flows.setdefault(client, len(flows))
            items.append(ReplayItem(offset, flow % max_flows, payload))
        return cls(tuple(items), min(len(flows), max_flows))

    def limited(self, requests: int | None) -> ReplayPlan:
        """The first ``requests`` items only (``None``: all)."""
        if requests is None or requests >= len(self.items):
            return self
        return ReplayPlan(self.items[:requests], self.flows)


_Entry = tuple[float, float]  # (deadline, origin)


class ReplayCore:
    """Hand out the due requests, match replies per flow, expire, sum up."""

    def __init__(
        self,
        plan: ReplayPlan,
        *,
        rule: ReplyRule,
        timeout: float,
        start: float,
        speed: float | None = 1.0,
        concurrency: int = 64,
        interval: float = 1.0,
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"--timeout must be > 0 (got {timeout})")
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise UsageError(f"--speed must be a positive number or 'max' (got {speed})")
        if concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1 (got {concurrency})")
        if not interval > 0:
            raise UsageError(f"interval must be > 0 (got {interval})")
        self.plan = plan
        self.timeout = timeout
        self.start = start
        self.speed = speed
        self.concurrency = concurrency
        self.interval = interval
        self._tables: list[PendingTable[int]] = [
            PendingTable(rule) for _ in range(max(plan.flows, 1))
        ]
        self._origin: dict[int, float] = {}
        self._expiry: deque[tuple[float, int, int]] = deque()  # deadline, flow, index
        self._next = 0
        self._max_answered = [-1] * len(self._tables)
        """Per flow: the latest request answered (a reply to an older one is reordered;
        flows are independent clients, so there is no order between them)."""
        self._last_event = start
        self._stopped_at: float | None = None
        self._latency: dict[int, dict[int, int]] = {}
        self._counts: dict[int, list[int]] = {}
        self.sent = self.received = self.lost = 0
        self.duplicates = self.late = self.wrong = self.reordered = 0
        self.late_sends = 0
        self.max_send_lag = 0.0

    # -- state -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._origin)

    def sending(self) -> bool:
        return self._stopped_at is None and self._next < len(self.plan.items)

    def stop(self, now: float) -> None:
        """Send nothing more (Ctrl-C); the requests in flight still resolve."""
        if self._stopped_at is None:
            self._stopped_at = now

    def finished(self) -> bool:
        return not self.sending() and not self._origin

    def intended(self, index: int) -> float:
        """When request ``index`` is meant to leave (paced replays)."""
        assert self.speed is not None
        return self.start + self.plan.items[index].offset / self.speed

    def next_send(self) -> float | None:
        """When the next request is due (``None``: none, or waiting for room in flight)."""
        if not self.sending():
            return None
        if self.speed is None:
            return self.start if self.in_flight < self.concurrency else None
        return self.intended(self._next)

    def next_deadline(self) -> float | None:
        """When the oldest request in flight times out (call :meth:`expire` then)."""
        expiry = self._expiry
        while expiry and expiry[0][2] not in self._origin:
            expiry.popleft()  # answered already
        return expiry[0][0] if expiry else None

    # -- sending ---------------------------------------------------------------

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """The requests to send at ``now``, as ``(flow, payload)``, accounted as sent."""
        out: list[tuple[int, bytes]] = []
        items = self.plan.items
        while self.sending():
            index = self._next
            if self.speed is None:
                if self.in_flight >= self.concurrency:
                    break
                origin = now
            else:
                origin = self.intended(index)
                if origin > now:
                    break
                lag = now - origin
                self.max_send_lag = max(self.max_send_lag, lag)
                if lag > LATE_SEND:
                    self.late_sends += 1
            item = items[index]
            self._next += 1
            self._tables[item.flow].add(index, item.payload)
            self._origin[index] = origin
            self._expiry.append((now + self.timeout, item.flow, index))
            self._count(now, 0)
            self.sent += 1
            out.append((item.flow, item.payload))
        if out:
            self._last_event = max(self._last_event, now)
        return out

    # -- receiving -------------------------------------------------------------

    def receive(self, flow: int, replies: Sequence[bytes], now: float) -> int:
        """Account for replies that arrived at ``now`` on ``flow``'s socket; returns how
        many answered a request."""
        if not 0 <= flow < len(self._tables):
            self.wrong += len(replies)
            return 0
        table = self._tables[flow]
        accepted = 0
        for reply in replies:
            index = table.match(reply)
            if index is None:
                kind = table.classify_unmatched(reply)
                if kind == "duplicate":
                    self.duplicates += 1
                elif kind == "late":
                    self.late += 1
                else:
                    self.wrong += 1
                continue
            origin = self._origin.pop(index)
            accepted += 1
            if index < self._max_answered[flow]:
                self.reordered += 1
            else:
                self._max_answered[flow] = index
            micros = max(0, int((now - origin) * 1_000_000))
            bucket = self._latency.setdefault(self._bucket(now), {})
            bucket[micros] = bucket.get(micros, 0) + 1
            self._count(now, 1)
        if accepted:
            self.received += accepted
            self._last_event = max(self._last_event, now)
        return accepted

    # -- time ------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Count every request whose timeout has passed as lost; returns how many."""
        expired = 0
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, flow, index = expiry.popleft()
            if self._origin.pop(index, None) is None:
                continue
            self._tables[flow].abandon(index)
            expired += 1
            self._count(now, 2)
        self.lost += expired
        return expired

    def _bucket(self, now: float) -> int:
        return max(0, int((now - self.start) / self.interval))

    def _count(self, now: float, which: int) -> None:
        counts = self._counts.setdefault(self._bucket(now), [0, 0, 0])
        counts[which] += 1

    # -- output ----------------------------------------------------------------

    def _interval(self, bucket: int) -> IntervalStats:
        sent, received, lost = self._counts.get(bucket, [0, 0, 0])
        return IntervalStats(bucket * self.interval, sent, received, lost,
                             dict(self._latency.get(bucket, {})))

    def intervals_closed(self, now: float, since: int = 0) -> list[IntervalStats]:
        """The intervals that ended by ``now``, from number ``since`` on (a live
        ``--json-stream``).  Every event is counted at the time it happens, which only
        moves on, so a closed interval never changes; :meth:`summary` returns the same
        ones (empty ones too), then those still open."""
        return [self._interval(bucket) for bucket in range(since, self._closed(now))]

    def _closed(self, now: float) -> int:
        return max(0, int((now - self.start) / self.interval))

    def summary(self, now: float) -> LoadSummary:
        """A frozen account of the replay so far (every request is measured)."""
        last = max([*self._counts, *self._latency, self._closed(now) - 1], default=-1)
        intervals = [self._interval(bucket) for bucket in range(last + 1)]
        latency = merge_counts([item.latency_us for item in intervals])
        end = self._last_event if self.finished() else now
        if self._stopped_at is not None:
            end = max(self._stopped_at, self._last_event)
        return LoadSummary(
            sent=self.sent,
            received=self.received,
            lost=self.lost,
            duplicates=self.duplicates,
            late=self.late,
            wrong=self.wrong,
            reordered=self.reordered,
            in_flight=self.in_flight,
            duration=max(0.0, end - self.start),
            latency_us=latency,
            intervals=tuple(intervals),
            late_sends=self.late_sends,
            max_send_lag=self.max_send_lag,
        )
