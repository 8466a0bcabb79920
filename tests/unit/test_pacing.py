"""Tier (a): the pacing rules of an open-loop generator, with a hand-driven clock.

Which intended times leave together and when (batching never sends early, never
more than its bound late), how the sender waits for a deadline, how send lag is
accounted, and when a run is flagged for its generator's own error.
"""

from __future__ import annotations

import pytest

from tests.unit.test_load_stats import make_core, reply_to
from udpkit.apps import reply_rule
from udpkit.apps.dns import DnsQueries
from udpkit.bench.config import BenchConfig
from udpkit.bench.result import BenchResult
from udpkit.core.load_stats import LoadCore, LoadSummary
from udpkit.core.pacing import (
    LAG_FLAG_FRACTION,
    LagAccount,
    PacingPolicy,
    batch_send_times,
    generator_error,
    lag_us,
    plan_batches,
    wait_plan,
)


def test_low_rates_are_never_batched() -> None:
    policy = PacingPolicy(batch_bound=5e-6)
    times = [i * 1e-3 for i in range(100)]  # 1000/s: gaps far above the bound
    sizes = plan_batches(times, policy)
    assert sizes == [1] * 100
    assert batch_send_times(times, sizes) == times


@pytest.mark.parametrize("gap", [1e-7, 1e-6, 2.5e-6, 4e-6, 7e-6])
def test_batching_never_sends_early_nor_later_than_its_bound(gap: float) -> None:
    policy = PacingPolicy(batch_bound=5e-6, max_batch=8)
    times = [i * gap for i in range(500)]
    sizes = plan_batches(times, policy)
    assert sum(sizes) == len(times)
    assert all(1 <= size <= policy.max_batch for size in sizes)
    index = 0
    for size, leaves in zip(sizes, batch_send_times(times, sizes), strict=True):
        members = times[index:index + size]
        index += size
        assert all(when <= leaves for when in members)  # never early
        assert all(leaves - when <= policy.batch_bound + 1e-12 for when in members)
    if gap < 1e-6:
        assert max(sizes) == policy.max_batch  # dense sends do share system calls


def test_poisson_bursts_batch_only_within_the_bound() -> None:
    times = [0.0, 1e-6, 3e-6, 5e-6, 5.5e-6, 0.001, 0.001002]
    assert plan_batches(times, PacingPolicy(batch_bound=5e-6)) == [4, 1, 2]
    assert plan_batches(times, PacingPolicy(batch_bound=0.0)) == [1] * 7


def test_the_sender_sleeps_until_the_spin_window_then_spins() -> None:
    policy = PacingPolicy(spin=50e-6)
    assert wait_plan(1.0, now=0.9, policy=policy) == pytest.approx(0.1 - 50e-6)
    assert wait_plan(1.0, now=1.0 - 20e-6, policy=policy) == 0.0  # inside: spin
    assert wait_plan(1.0, now=1.5, policy=policy) == 0.0  # late: send at once
    assert wait_plan(1.0, now=0.9, policy=PacingPolicy(spin=0.0)) == pytest.approx(0.1)


def test_the_spin_is_at_most_a_share_of_the_gap_between_sends() -> None:
    policy = PacingPolicy(spin=50e-6, spin_share=0.25)
    assert policy.spin_for(1000.0) == pytest.approx(50e-6)  # 1 ms gaps: the full spin
    assert policy.spin_for(10_000.0) == pytest.approx(25e-6)  # a quarter of 100 us
    assert policy.spin_for(100_000.0) == pytest.approx(2.5e-6)


def test_policy_rejects_impossible_settings() -> None:
    for bad in ({"spin": -1.0}, {"max_batch": 0}, {"feed_ahead": 0.0}, {"timer_slack_ns": 0},
                {"spin_share": 2.0}):
        with pytest.raises(ValueError, match=">="):
            PacingPolicy(**bad)


def test_lag_is_counted_per_send_in_whole_microseconds_from_the_end_of_warm_up() -> None:
    account = LagAccount(since=1.0)
    account.record([0.5], actual=0.6)  # warm-up: not counted
    account.record([1.0, 1.000002], actual=1.000005)  # one batch, two sends
    account.record([2.0], actual=2.003)
    assert account.counts == {5: 1, 3: 1, 3000: 1}
    assert account.worst == pytest.approx(0.003)
    assert account.late(0.002) == 1
    assert lag_us(1.0, 0.999999) == 0  # clocks a rounding apart: never negative


def test_batches_reported_in_bulk_count_as_one_by_one() -> None:
    one_by_one, bulk = LagAccount(since=1.0), LagAccount(since=1.0)
    intended = [0.5, 1.0, 1.000002, 2.0, 3.0]
    sizes = [1, 2, 1, 1]
    actual = [0.6, 1.000005, 2.003, 2.9999995]
    index = 0
    for size, left in zip(sizes, actual, strict=True):
        one_by_one.record(intended[index:index + size], left)
        index += size
    bulk.record_batches(intended, sizes, actual)
    assert bulk.counts == one_by_one.counts == {5: 1, 3: 1, 3000: 1, 0: 1}
    assert bulk.worst == one_by_one.worst


def test_replies_with_their_own_arrival_times_count_as_one_by_one() -> None:
    cores = make_core(duration=10.0), make_core(duration=10.0)
    for core in cores:
        core.interval = 0.5
    times = [0.1, 0.2, 0.6, 0.7, 1.4]
    for core in cores:
        payloads = core.issue_planned(times, now=0.0)
    replies = [reply_to(p) for p in payloads] + [b"junk"]
    arrivals = [0.10003, 0.2001, 0.6002, 0.7003, 1.5, 1.6]
    one, bulk = cores
    for reply, when in zip(replies, arrivals, strict=True):
        one.receive([reply], when, read_lag_us=4)
    assert bulk.receive_at(replies, arrivals, [4] * len(replies)) == 5
    first, second = one.summary(2.0), bulk.summary(2.0)
    assert second.latency_us == first.latency_us
    assert [(i.start, i.received, dict(i.latency_us)) for i in second.intervals] == [
        (i.start, i.received, dict(i.latency_us)) for i in first.intervals]
    assert (second.received, second.wrong) == (first.received, first.wrong) == (5, 1)
    assert second.receive_lag_us == first.receive_lag_us == {4: 5}


def test_core_accounts_lag_reported_by_a_sender_that_keeps_time() -> None:
    core = make_core()  # warm-up ends at 0
    payloads = core.issue_planned([0.010, 0.011], now=0.0)  # registered before leaving
    assert core.summary(0.0).send_lag_us == {}
    core.record_send_lag([0.010], actual=0.010004)
    core.record_send_lag([0.011], actual=0.0135)
    core.receive([reply_to(payloads[0])], now=0.010030, read_lag_us=7)
    summary = core.summary(0.02)
    assert summary.send_lag_us == {4: 1, 2500: 1}
    assert summary.late_sends == 1
    assert summary.max_send_lag == pytest.approx(0.0025)
    assert summary.latency_us == {30: 1}  # from the intended time
    assert summary.receive_lag_us == {7: 1}


def test_planned_requests_time_out_after_their_own_intended_time() -> None:
    core = make_core()  # timeout 1 s
    core.issue_planned([0.04, 0.05], now=0.0)
    assert core.next_deadline() == pytest.approx(1.05)
    assert core.expire(1.04) == 0


def test_the_event_loop_sender_accounts_its_own_lag() -> None:
    core = make_core()
    core.issue_scheduled([0.1, 0.1005], now=0.1012)
    assert core.summary(0.2).send_lag_us == {1200: 1, 700: 1}


def test_a_run_is_flagged_when_lag_p99_exceeds_the_stated_fraction_of_latency_p50() -> None:
    assert LAG_FLAG_FRACTION == 0.5
    assert not generator_error(lag_p99_us=10, latency_p50_us=20)
    assert generator_error(lag_p99_us=11, latency_p50_us=20)
    assert generator_error(lag_p99_us=1, latency_p50_us=0)
    assert not generator_error(lag_p99_us=0, latency_p50_us=0)


def test_the_result_flags_a_run_and_documents_both_lags() -> None:
    config = BenchConfig(rate=1000.0, duration=1.0).check()
    calm = BenchResult.build(config, LoadSummary(
        sent=100, received=100, duration=1.0, latency_us={40: 100},
        send_lag_us={0: 98, 20: 2}, receive_lag_us={12: 100}, paced_by="c"))
    assert calm.send_lag_us == {"p50": 0, "p90": 0, "p99": 20, "p99.9": 20, "max": 20}
    assert not calm.generator_flagged
    document = calm.as_dict()
    assert document["send_lag_us"]["histogram"] == {"0": 98, "20": 2}
    assert document["receive_lag_us"]["p50"] == 12
    assert document["paced_by"] == "c"
    noisy = BenchResult.build(config, LoadSummary(
        sent=100, received=100, duration=1.0, latency_us={40: 100},
        send_lag_us={0: 90, 500: 10}))
    assert noisy.generator_flagged
    assert noisy.as_dict()["generator_flagged"] is True
    closed = BenchResult.build(BenchConfig(duration=1.0).check(), LoadSummary(
        sent=1, received=1, duration=1.0, latency_us={40: 1}))
    assert closed.send_lag_us == {}
    assert not closed.generator_flagged
    assert closed.as_dict()["send_lag_us"] is None


def test_replies_in_bulk_are_matched_by_the_rule_key_as_one_by_one() -> None:
    """A keyed rule (DNS: id and question) matched one by one but not in bulk: the C-paced
    open loop (``bench --rate --expect dns``) counted every answer wrong."""
    cores = [LoadCore(template=DnsQueries(["example.com A"]), rule=reply_rule("dns"),
                      timeout=1.0, start=0.0, warmup=0.0, duration=10.0, requests=None,
                      interval=1.0) for _ in range(2)]
    for core in cores:
        payloads = core.issue_planned([0.1, 0.2, 0.3], now=0.0)
    replies = [payload[:2] + bytes([payload[2] | 0x80]) + payload[3:] for payload in payloads]
    one, bulk = cores
    for reply, when in zip(replies, [0.15, 0.25, 0.35], strict=True):
        assert one.receive([reply], when) == 1
    assert bulk.receive_at(replies, [0.15, 0.25, 0.35]) == 3
    assert (bulk.summary(1.0).received, bulk.summary(1.0).wrong) == (3, 0)
