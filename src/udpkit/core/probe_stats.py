"""The sans-IO statistics of ``udpkit ping``: one probe at a time, ping(8)'s summary.

Rule: each probe ends exactly once, as ``received`` (its first reply),
``lost`` (its timeout passed, or it was refused, or the run ended while it
was in flight); further replies are ``duplicates``, replies after the timeout
``late``; neither is counted received.  A reply to a probe older than one
already answered is ``out_of_order`` (and received).  Time is always an
argument: no socket, asyncio or time import here.

Jitter is RFC 3550's interarrival jitter (section 6.4.1, appendix A.8):
``J += (|D(i-1, i)| - J) / 16`` with ``D`` the difference of the transit
times of two consecutive replies, in arrival order.
https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ReplyKind = Literal["reply", "duplicate", "late", "unknown"]


@dataclass(frozen=True, slots=True)
class ProbeReply:
    """What one received reply was."""

    seq: int
    kind: ReplyKind
    rtt: float
    """Seconds from the probe's send to this reply."""
    out_of_order: bool = False


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """ping(8)'s closing figures (times in seconds)."""

    sent: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    refused: int = 0
    rtt_min: float = 0.0
    rtt_avg: float = 0.0
    rtt_max: float = 0.0
    rtt_mdev: float = 0.0
    """``sqrt(mean(rtt^2) - mean(rtt)^2)``, as ping(8) computes it."""
    jitter: float = 0.0
    """RFC 3550 interarrival jitter."""
    elapsed: float = 0.0
    rtt_p50: float = 0.0
    rtt_p90: float = 0.0
    rtt_p99: float = 0.0
    """Nearest-rank percentiles of the round-trip times: each one is a measured
    time, so none exceeds ``rtt_max``."""

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss_percent(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0


_IN_FLIGHT, _ANSWERED, _EXPIRED = 0, 1, 2


class ProbeStats:
    """Probes sent, their replies and their timeouts."""

    def __init__(self, *, timeout: float, start: float) -> None:
        self.timeout = timeout
        self.start = start
        self._sent_at: dict[int, float] = {}
        self._state: dict[int, int] = {}
        self._deadlines: dict[int, float] = {}
        self._rtts: list[float] = []
        self._max_answered = -1
        self._last_transit: float | None = None
        self._jitter = 0.0
        self._duplicates = self._out_of_order = self._late = self._refused = 0
        self._last_event = start

    def sent(self, seq: int, now: float) -> None:
        """Probe ``seq`` left at ``now``."""
        self._sent_at[seq] = now
        self._state[seq] = _IN_FLIGHT
        self._deadlines[seq] = now + self.timeout
        self._last_event = max(self._last_event, now)

    def reply(self, seq: int, now: float) -> ProbeReply:
        """A reply to probe ``seq`` arrived at ``now``."""
        self._last_event = max(self._last_event, now)
        state = self._state.get(seq)
        if state is None:
            return ProbeReply(seq, "unknown", 0.0)
        rtt = now - self._sent_at[seq]
        if state == _ANSWERED:
            self._duplicates += 1
            return ProbeReply(seq, "duplicate", rtt)
        if state == _EXPIRED:
            self._late += 1
            return ProbeReply(seq, "late", rtt)
        self._state[seq] = _ANSWERED
        del self._deadlines[seq]
        self._rtts.append(rtt)
        out_of_order = seq < self._max_answered
        if out_of_order:
            self._out_of_order += 1
        else:
            self._max_answered = seq
        # RFC 3550 A.8: transit = arrival - send; J += (|D| - J) / 16.
        transit = rtt
        if self._last_transit is not None:
            difference = abs(transit - self._last_transit)
            self._jitter += (difference - self._jitter) / 16.0
        self._last_transit = transit
        return ProbeReply(seq, "reply", rtt, out_of_order)

    def refused(self, seq: int, now: float) -> bool:
        """The peer refused probe ``seq``; True if it was still waiting."""
        if self._state.get(seq) != _IN_FLIGHT:
            return False
        self._state[seq] = _EXPIRED
        del self._deadlines[seq]
        self._refused += 1
        return True

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values()) if self._deadlines else None

    def expire(self, now: float) -> list[int]:
        """Probes whose timeout passed at ``now``, oldest first (now lost)."""
        gone = sorted(seq for seq, when in self._deadlines.items() if when <= now)
        for seq in gone:
            del self._deadlines[seq]
            self._state[seq] = _EXPIRED
        return gone

    def in_flight(self) -> int:
        return len(self._deadlines)

    def summary(self) -> ProbeSummary:
        rtts = self._rtts
        if rtts:
            avg = sum(rtts) / len(rtts)
            mean_square = sum(r * r for r in rtts) / len(rtts)
            mdev = math.sqrt(max(0.0, mean_square - avg * avg))
            low, high = min(rtts), max(rtts)
            ranked = sorted(rtts)
            p50, p90, p99 = (_nearest_rank(ranked, percent) for percent in (50, 90, 99))
        else:
            avg = mdev = low = high = p50 = p90 = p99 = 0.0
        return ProbeSummary(
            sent=len(self._sent_at),
            received=len(rtts),
            duplicates=self._duplicates,
            out_of_order=self._out_of_order,
            late=self._late,
            refused=self._refused,
            rtt_min=low,
            rtt_avg=avg,
            rtt_max=high,
            rtt_mdev=mdev,
            jitter=self._jitter,
            elapsed=self._last_event - self.start,
            rtt_p50=p50,
            rtt_p90=p90,
            rtt_p99=p99,
        )


def _nearest_rank(ranked: list[float], percent: float) -> float:
    """The smallest value with at least ``percent`` % of the values at or below it."""
    index = max(0, math.ceil(percent / 100.0 * len(ranked)) - 1)
    return ranked[index]
