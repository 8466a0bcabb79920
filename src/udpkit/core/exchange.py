"""The sans-IO request/reply engine of a datagram client.

Rule: this is the client's whole protocol logic.  The I/O glue calls
:meth:`DatagramClientCore.request`, sends what :meth:`datagrams_to_send`
returns, feeds every received datagram to :meth:`receive_datagram`, arms one
timer at :meth:`get_timer` and calls :meth:`handle_timer` when it fires; the
results come out of :meth:`next_event`.  Time is always an argument.

Many requests can be in flight at once; each has its own deadline and retry
schedule (:mod:`udpkit.core.retry`) and is matched to its reply by content
(:mod:`udpkit.core.matching`), never by arrival order.

A reply from the server that matches no request is skipped, not fatal: the
right reply may still come.  But it is remembered by every request then in
flight, and a request whose attempt times out after the server answered it
with something else fails at once as ``protocol`` (the server is up and says
something this matcher does not accept: retransmitting will not change that)
instead of retrying until its deadline and reporting a timeout.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from udpkit.core.errors import UsageError
from udpkit.core.handler import Address
from udpkit.core.matching import PendingTable, ReplyRule
from udpkit.core.retry import RetryPolicy, RetrySchedule


@dataclass(frozen=True, slots=True)
class Answered:
    """A request got its reply."""

    token: int
    request: bytes
    reply: bytes
    elapsed: float
    """Seconds from the first transmission to the accepted reply."""
    attempts: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A request gave up: its deadline passed, the peer refused, or the server
    answered only with replies that do not match it (``protocol``)."""

    token: int
    request: bytes
    cause: Literal["timeout", "refused", "protocol"]
    elapsed: float
    attempts: int
    reply: bytes | None = None
    """``protocol``: the last non-matching reply the server sent meanwhile."""


Event = Answered | Failed


@dataclass(frozen=True, slots=True)
class ClientStats:
    """What a client saw, for tests to compare with the server's counters."""

    requests: int = 0
    """Requests started."""
    answered: int = 0
    timeouts: int = 0
    refused: int = 0
    transmissions: int = 0
    """Datagrams sent, first attempts and retransmissions."""
    retransmissions: int = 0
    duplicates: int = 0
    """Further copies of a reply already accepted."""
    late: int = 0
    """Replies to a request that had already given up."""
    unexpected: int = 0
    """Replies from the server that match no request."""
    stray: int = 0
    """Datagrams from an address other than the server's."""


_UNMATCHED_STAT = {"duplicate": "duplicates", "late": "late", "unexpected": "unexpected"}


class _Request:
    __slots__ = ("mismatch", "payload", "schedule")

    def __init__(self, payload: bytes, schedule: RetrySchedule) -> None:
        self.payload = payload
        self.schedule = schedule
        self.mismatch: bytes | None = None


def same_endpoint(a: Address | tuple[str, int], b: Address | tuple[str, int]) -> bool:
    """Host and port equal (IPv6 flow info and scope are ignored)."""
    return a[0] == b[0] and a[1] == b[1]


class DatagramClientCore:
    """Requests in flight to one server, their retries and their replies."""

    def __init__(
        self,
        *,
        server: Address,
        matcher: ReplyRule,
        policy: RetryPolicy,
        rng: random.Random | None = None,
        max_payload: int = 65507,
    ) -> None:
        self.server = server
        self.policy = policy
        self.max_payload = max_payload
        self._rng = rng if rng is not None else random.Random()
        self._table: PendingTable[int] = PendingTable(matcher)
        self._requests: dict[int, _Request] = {}
        self._timers: list[tuple[float, int, int]] = []  # (when, token, attempt)
        self._outgoing: list[bytes] = []
        self._events: deque[Event] = deque()
        self._next_token = 0
        self._stats = dict.fromkeys(ClientStats.__slots__, 0)

    # -- input from the user -------------------------------------------------

    def request(self, payload: bytes, *, now: float) -> int:
        """Start a request; its first datagram is queued at once.  Returns its token."""
        if len(payload) > self.max_payload:
            raise UsageError(f"payload of {len(payload)} bytes exceeds {self.max_payload}")
        token = self._next_token
        self._next_token += 1
        schedule = RetrySchedule(self.policy, now=now, rng=self._rng)
        self._requests[token] = _Request(payload, schedule)
        self._table.add(token, payload)
        self._stats["requests"] += 1
        self._transmit(token, now)
        return token

    def cancel(self, token: int) -> None:
        """Forget a request the user no longer waits for (no event is produced)."""
        if self._requests.pop(token, None) is not None:
            self._table.abandon(token)

    # -- input from the network ----------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, *, now: float) -> None:
        """Take one datagram; a matching reply completes its request."""
        if not same_endpoint(source, self.server):
            self._stats["stray"] += 1
            return
        token = self._table.match(data)
        if token is None:
            why = self._table.classify_unmatched(data)
            self._stats[_UNMATCHED_STAT[why]] += 1
            if why == "unexpected":
                for waiting in self._requests.values():
                    waiting.mismatch = data
            return
        req = self._requests.pop(token)
        self._stats["answered"] += 1
        self._events.append(
            Answered(token, req.payload, data, now - req.schedule.started, req.schedule.attempts)
        )

    def connection_refused(self, *, now: float) -> None:
        """The server's port is closed (ICMP port unreachable): fail every request."""
        for token in list(self._requests):
            self._fail(token, "refused", now)

    # -- time ----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        timers = self._timers
        while timers:
            when, token, attempt = timers[0]
            req = self._requests.get(token)
            if req is not None and req.schedule.attempts == attempt:
                return when
            heapq.heappop(timers)  # stale: answered, failed or already retried
        return None

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up every request whose attempt has timed out."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, token, attempt = heapq.heappop(timers)
            req = self._requests.get(token)
            if req is None or req.schedule.attempts != attempt:
                continue
            if req.mismatch is not None:
                self._fail(token, "protocol", now)
            elif req.schedule.can_retry(now):
                self._stats["retransmissions"] += 1
                self._transmit(token, now)
            else:
                self._fail(token, "timeout", now)

    # -- output --------------------------------------------------------------

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def in_flight(self) -> int:
        return len(self._requests)

    def stats(self) -> ClientStats:
        return ClientStats(**self._stats)

    # -- internals -----------------------------------------------------------

    def _transmit(self, token: int, now: float) -> None:
        req = self._requests[token]
        when = req.schedule.start_attempt(now)
        heapq.heappush(self._timers, (when, token, req.schedule.attempts))
        self._outgoing.append(req.payload)
        self._stats["transmissions"] += 1

    def _fail(
        self, token: int, cause: Literal["timeout", "refused", "protocol"], now: float
    ) -> None:
        req = self._requests.pop(token)
        self._table.abandon(token)
        if cause != "protocol":  # its reply is already counted as ``unexpected``
            self._stats["refused" if cause == "refused" else "timeouts"] += 1
        self._events.append(
            Failed(token, req.payload, cause, now - req.schedule.started, req.schedule.attempts,
                   req.mismatch if cause == "protocol" else None)
        )
