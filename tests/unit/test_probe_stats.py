"""Tier (a): ping's statistics on synthetic reply streams, clock driven by hand."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from udpkit.core.probe_stats import ProbeStats


def rfc3550_jitter(transits: list[float]) -> float:
    """RFC 3550 A.8, written out: J += (|D| - J) / 16 over consecutive transits."""
    jitter = 0.0
    for previous, current in itertools.pairwise(transits):
        jitter += (abs(current - previous) - jitter) / 16
    return jitter


def test_ping_summary_counts_each_outcome_once() -> None:
    stats = ProbeStats(timeout=1.0, start=0.0)
    for seq in range(5):
        stats.sent(seq, now=float(seq))
    assert stats.reply(0, now=0.010).kind == "reply"
    first_dup = stats.reply(0, now=0.020)
    assert first_dup.kind == "duplicate"
    two = stats.reply(2, now=2.030)
    one = stats.reply(1, now=2.040)  # probe 1 answered after probe 2: out of order
    assert (two.out_of_order, one.out_of_order) == (False, True)
    assert stats.expire(now=4.0) == [3]
    assert stats.reply(3, now=4.5).kind == "late"
    assert stats.refused(4, now=4.1)
    assert not stats.refused(4, now=4.2)
    assert stats.reply(99, now=5.0).kind == "unknown"
    summary = stats.summary()
    assert summary.sent == 5
    assert summary.received == 3
    assert summary.lost == 2
    assert summary.loss_percent == pytest.approx(40.0)
    assert (summary.duplicates, summary.out_of_order, summary.late, summary.refused) == (1, 1, 1, 1)
    rtts = [0.010, 0.030, 1.040]
    assert summary.rtt_min == pytest.approx(min(rtts))
    assert summary.rtt_max == pytest.approx(max(rtts))
    assert summary.rtt_avg == pytest.approx(sum(rtts) / 3)
    mean = sum(rtts) / 3
    mdev = math.sqrt(sum(r * r for r in rtts) / 3 - mean * mean)
    assert summary.rtt_mdev == pytest.approx(mdev)
    assert summary.jitter == pytest.approx(rfc3550_jitter([0.010, 0.030, 1.040]))
    assert stats.in_flight() == 0


def test_jitter_against_the_rfc_reference_on_random_streams() -> None:
    rng = random.Random(3)
    stats = ProbeStats(timeout=10.0, start=0.0)
    transits = []
    for seq in range(500):
        sent_at = seq * 0.01
        stats.sent(seq, now=sent_at)
        transit = 0.001 + rng.expovariate(1000.0)
        transits.append(transit)
        stats.reply(seq, now=sent_at + transit)
    summary = stats.summary()
    assert summary.jitter == pytest.approx(rfc3550_jitter(transits))
    assert summary.received == 500
    assert summary.rtt_min == pytest.approx(min(transits))


def test_no_reply_at_all() -> None:
    stats = ProbeStats(timeout=0.5, start=0.0)
    stats.sent(0, now=0.0)
    stats.sent(1, now=1.0)
    assert stats.next_deadline() == 0.5
    assert stats.expire(now=0.5) == [0]
    assert stats.expire(now=1.5) == [1]
    summary = stats.summary()
    assert (summary.sent, summary.received, summary.loss_percent) == (2, 0, 100.0)
    assert (summary.rtt_min, summary.rtt_avg, summary.jitter) == (0.0, 0.0, 0.0)
