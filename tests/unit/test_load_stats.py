"""Tier (a): the load-test accounting on synthetic reply streams, clock driven by hand."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from udpkit.apps import reply_rule
from udpkit.apps.greeting import greet
from udpkit.bench.config import BenchConfig
from udpkit.bench.result import BenchResult
from udpkit.core.addresses import parse_host_port
from udpkit.core.errors import UsageError
from udpkit.core.load_stats import (
    ArrivalSchedule,
    LoadCore,
    LoadSummary,
    percentile_of_counts,
)
from udpkit.core.payloads import PayloadTemplate


def make_core(
    *,
    expect: str = "greeting",
    template: str = "n{seq}",
    timeout: float = 1.0,
    warmup: float = 0.0,
    duration: float | None = 100.0,
    requests: int | None = None,
    size: int = 0,
) -> LoadCore:
    return LoadCore(
        template=PayloadTemplate(template, size=size),
        rule=reply_rule(expect),
        timeout=timeout,
        start=0.0,
        warmup=warmup,
        duration=duration,
        requests=requests,
        interval=1.0,
    )


def reply_to(payload: bytes) -> bytes:
    return greet(payload)


def test_every_request_answered_in_order() -> None:
    core = make_core()
    payloads = core.issue(5, now=0.0)
    assert payloads == [b"n0", b"n1", b"n2", b"n3", b"n4"]
    assert core.receive([reply_to(p) for p in payloads], now=0.25) == 5
    summary = core.summary(now=0.25)
    assert (summary.sent, summary.received, summary.lost) == (5, 5, 0)
    assert (summary.duplicates, summary.late, summary.wrong, summary.reordered) == (0, 0, 0, 0)
    assert summary.latency_us == {250000: 5}
    assert core.in_flight == 0


def test_loss_duplicates_reordering_late_and_wrong_are_told_apart() -> None:
    core = make_core(timeout=1.0)
    payloads = core.issue(10, now=0.0)
    replies = {seq: reply_to(p) for seq, p in enumerate(payloads)}
    # 0..3 answered, in the order 0, 2, 1, 3: one reordered reply (1).
    core.receive([replies[0], replies[2], replies[1], replies[3]], now=0.1)
    # Duplicates of 0 and 2, a wrong reply, a reply to a request never sent.
    core.receive([replies[0], replies[2], b"Hello, nonsense!", greet(b"n99")], now=0.2)
    # 4..9 time out except 5, answered just in time.
    core.receive([replies[5]], now=0.99)
    assert core.next_deadline() == 1.0
    assert core.expire(now=1.0) == 5
    # Late replies to 4 and 6, and a duplicate of 5.
    core.receive([replies[4], replies[6], replies[5]], now=1.5)
    summary = core.summary(now=1.5)
    assert summary.sent == 10
    assert summary.received == 5
    assert summary.lost == 5
    assert summary.duplicates == 3
    assert summary.late == 2
    assert summary.wrong == 2
    assert summary.reordered == 1
    assert summary.sent == summary.received + summary.lost
    assert summary.in_flight == 0
    assert summary.loss == pytest.approx(0.5)


def test_receive_and_expire_name_the_requests_they_settle() -> None:
    """What a generator needs to give each request's pipelining place back: the
    sequence numbers answered (not late, duplicate or wrong replies) and timed out."""
    core = make_core(timeout=1.0)
    payloads = core.issue(6, now=0.0)
    assert core.issued == 6
    answered: list[int] = []
    core.receive([reply_to(payloads[2]), reply_to(payloads[0]), reply_to(payloads[2]),
                  b"junk"], now=0.1, answered=answered)
    assert answered == [2, 0]
    expired: list[int] = []
    core.receive([reply_to(payloads[5])], now=0.5, answered=answered)
    assert core.expire(now=1.0, expired_seqs=expired) == 3
    assert (answered, sorted(expired)) == ([2, 0, 5], [1, 3, 4])
    core.receive([reply_to(payloads[1])], now=1.5, answered=answered)  # late
    assert answered == [2, 0, 5]


def test_regex_rule_matches_by_captured_number() -> None:
    core = make_core(expect=r"^ok {seq}$", template="req {seq}")
    payloads = core.issue(3, now=0.0)
    assert payloads == [b"req 0", b"req 1", b"req 2"]
    core.receive([b"ok 2", b"ok 0", b"ok 2", b"ok 7", b"nope"], now=0.5)
    core.expire(now=1.0)
    core.receive([b"ok 1"], now=1.2)
    summary = core.summary(now=1.2)
    assert (summary.received, summary.lost) == (2, 1)
    assert (summary.duplicates, summary.late, summary.wrong, summary.reordered) == (1, 1, 2, 1)


def test_echo_rule_with_padding() -> None:
    core = make_core(expect="echo", size=8)
    payloads = core.issue(2, now=0.0)
    assert payloads == [b"n0xxxxxx", b"n1xxxxxx"]
    core.receive([b"n1xxxxxx", b"n0xxxxxx", b"n0xxxxx"], now=0.001)
    summary = core.summary(now=0.001)
    assert (summary.received, summary.reordered, summary.wrong) == (2, 1, 1)


def test_warmup_requests_are_not_measured() -> None:
    core = make_core(warmup=1.0)
    early = core.issue(3, now=0.5)
    core.receive([reply_to(early[0])], now=0.6)
    late_start = core.issue(2, now=1.0)
    assert late_start == [b"n3", b"n4"]
    core.receive([reply_to(p) for p in (*early[1:], *late_start)], now=1.5)
    core.receive([reply_to(early[0])], now=1.6)  # duplicate of a warm-up reply: ignored
    summary = core.summary(now=1.6)
    assert (summary.sent, summary.received, summary.duplicates) == (2, 2, 0)
    assert summary.latency_us == {500000: 2}


def test_sending_stops_at_requests_or_duration() -> None:
    core = make_core(requests=7, duration=None)
    assert len(core.issue(5, now=0.0)) == 5
    assert len(core.issue(5, now=0.1)) == 2
    assert core.issue(5, now=0.2) == []
    assert not core.sending(0.2)
    timed = make_core(duration=2.0)
    assert timed.issue(1, now=1.9) == [b"n0"]
    assert timed.issue(1, now=2.0) == []
    assert not timed.finished(2.0)
    timed.expire(now=2.9)
    assert timed.summary(2.9).duration == pytest.approx(2.0)


def test_open_loop_latency_counts_from_the_intended_send_time() -> None:
    core = make_core()
    # The generator stalled: two requests meant for 0.0 and 0.001 leave at 0.5.
    payloads = core.issue_scheduled([0.0, 0.001], now=0.5)
    core.receive([reply_to(p) for p in payloads], now=0.6)
    summary = core.summary(now=0.6)
    assert sorted(summary.latency_us) == [599000, 600000]
    assert summary.late_sends == 2
    assert summary.max_send_lag == pytest.approx(0.5)
    on_time = make_core()
    on_time.issue_scheduled([0.25], now=0.2505)
    assert on_time.summary(0.3).late_sends == 0


def test_constant_and_poisson_schedules() -> None:
    constant = ArrivalSchedule(10.0, start=0.0)
    assert constant.due(0.35) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert constant.next_time() == pytest.approx(0.4)
    poisson = ArrivalSchedule(1000.0, start=0.0, poisson=True, rng=random.Random(1))
    times = poisson.due(10.0)
    assert 9500 < len(times) < 10500
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(set(gaps)) > 100  # not constant
    with pytest.raises(UsageError, match="rate"):
        ArrivalSchedule(0.0, start=0.0)


def brute_force_percentile(values: list[int], percent: float) -> int:
    ordered = sorted(values)
    rank = max(1, math.floor(percent * len(ordered) / 100 + 0.5))  # nearest rank
    return ordered[rank - 1]


def test_percentiles_against_a_brute_force_reference() -> None:
    rng = random.Random(7)
    core = make_core(timeout=60.0)
    latencies: list[int] = []
    now = 0.0
    for _ in range(200):
        payloads = core.issue(20, now=now)
        for payload in payloads:
            delay = rng.choice([rng.uniform(0.0001, 0.001), rng.expovariate(50.0)])
            at = now + delay
            latencies.append(int((at - now) * 1_000_000))
            core.receive([reply_to(payload)], now=at)
        now += 0.01
    summary = core.summary(now=now + 1)
    assert summary.received == len(latencies) == 4000
    assert sorted(
        value for value, count in summary.latency_us.items() for _ in range(count)
    ) == sorted(latencies)
    result = BenchResult.build(BenchConfig(duration=1.0).check(), summary)
    for name, percent in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9),
                          ("p99.99", 99.99)):
        exact = brute_force_percentile(latencies, percent)
        assert percentile_of_counts(summary.latency_us, percent) == exact
        # HdrHistogram with 3 significant digits: within 0.1 % (plus one microsecond).
        assert abs(result.percentiles_us[name] - exact) <= exact * 0.001 + 1
    assert result.percentiles_us["max"] == max(latencies)


def test_intervals_add_up_to_the_totals() -> None:
    core = make_core(timeout=0.5)
    for step in range(30):
        now = step * 0.1
        core.expire(now)
        payloads = core.issue(4, now=now)
        core.receive([reply_to(p) for p in payloads[:3]], now=now + 0.01)
    core.expire(10.0)
    summary = core.summary(10.0)
    assert summary.sent == 120
    assert (summary.received, summary.lost) == (90, 30)
    assert sum(item.sent for item in summary.intervals) == 120
    assert sum(item.received for item in summary.intervals) == 90
    assert sum(item.lost for item in summary.intervals) == 30


def test_random_fake_network_keeps_the_books_balanced() -> None:
    """Tier (b): a seeded router drops, duplicates, delays and reorders replies."""
    rng = random.Random(0)
    core = make_core(timeout=0.05, duration=2.0)
    in_air: list[tuple[float, bytes]] = []
    duplicated = 0
    now = 0.0
    while not core.finished(now):
        core.expire(now)
        for payload in core.issue(16 - core.in_flight, now=now):
            fate = rng.random()
            if fate < 0.1:
                continue  # dropped
            delay = rng.expovariate(1 / 0.01)
            in_air.append((now + delay, reply_to(payload)))
            if fate > 0.95:
                duplicated += 1
                in_air.append((now + delay + rng.uniform(0, 0.02), reply_to(payload)))
        now += 0.001
        arrived = [reply for when, reply in in_air if when <= now]
        in_air = [(when, reply) for when, reply in in_air if when > now]
        rng.shuffle(arrived)
        core.receive(arrived, now=now)
    summary = core.summary(now)
    assert summary.sent == summary.received + summary.lost
    assert summary.lost > 0
    assert summary.late > 0
    assert summary.duplicates + summary.late <= duplicated + summary.lost
    assert summary.wrong == 0


@pytest.mark.parametrize(
    ("template", "expect", "message"),
    [
        ("no number", "greeting", "must contain {seq}"),
        ("{seq}{other}", "greeting", "bad payload template"),
        ("{seq", "greeting", "bad payload template"),
        ("n{seq}", "(unclosed{seq}", "bad --expect"),
        ("n{seq}", "no placeholder", "containing {seq}"),
        ("n{seq}", "any", "'any' cannot tell which request a reply answers"),
    ],
)
def test_bad_templates_and_rules(template: str, expect: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("(", r"\(")):
        BenchConfig(template=template, expect=expect).check()


def test_bad_settings() -> None:
    for bad in (dict(rate=0.0), dict(rate=-3.0), dict(concurrency=0), dict(duration=0.0),
                dict(timeout=0.0), dict(size=70000), dict(requests=0)):
        with pytest.raises(UsageError):
            BenchConfig(**bad).check()


def test_parse_target() -> None:
    assert parse_host_port("127.0.0.1:9999") == ("127.0.0.1", 9999)
    assert parse_host_port("[::1]:53") == ("::1", 53)
    assert parse_host_port("localhost", default_port=7) == ("localhost", 7)
    assert parse_host_port("[::1]", default_port=7) == ("::1", 7)
    for bad in ("127.0.0.1", "host:port", "[::1", "h:70000", "h:0"):
        with pytest.raises(UsageError):
            parse_host_port(bad, allow_zero=False)


def test_summary_throughput() -> None:
    assert LoadSummary(received=10, duration=2.0).throughput == 5.0
    assert LoadSummary().throughput == 0.0
