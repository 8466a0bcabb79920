"""The replay's sans-IO core: the plan from a capture, pace, matching per flow, accounts.

The clock is driven by hand; nothing is sent.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.capture_files import conversation, frame, ip_udp, pcap_file
from udpkit.apps import reply_rule
from udpkit.bench.replay import parse_speed, replay_rule, select_requests
from udpkit.capture import CaptureError, parse_capture_untrusted
from udpkit.capture.reader import LINKTYPE_ETHERNET
from udpkit.core.errors import UsageError
from udpkit.core.load_stats import IntervalStats
from udpkit.core.matching import ANY
from udpkit.core.replay import ReplayCore, ReplayItem, ReplayPlan


def plan(*items: tuple[float, int, bytes]) -> ReplayPlan:
    return ReplayPlan(tuple(ReplayItem(*item) for item in items),
                      flows=max(item[1] for item in items) + 1)


def test_the_plan_numbers_flows_and_keeps_the_recorded_gaps() -> None:
    built = ReplayPlan.build([
        (100.0, ("a", 1), b"x"), (100.5, ("b", 2), b"y"), (100.25, ("a", 1), b"z"),
        (101.0, ("c", 3), b"w"),
    ], max_flows=2)
    assert [(i.offset, i.flow, i.payload) for i in built.items] == [
        (0.0, 0, b"x"), (0.5, 1, b"y"),
        (0.5, 0, b"z"),  # out of order in the file: sent in file order, no earlier
        (1.0, 0, b"w"),  # the third flow folded onto the first socket
    ]
    assert built.flows == 2
    assert built.limited(2).items == built.items[:2]


def test_recorded_pace_scaled_by_speed_and_latency_from_the_intended_time() -> None:
    core = ReplayCore(plan((0.0, 0, b"a"), (1.0, 0, b"b"), (3.0, 0, b"c")), rule=ANY,
                      timeout=5.0, start=0.0, speed=2.0)
    assert core.due(0.0) == [(0, b"a")]
    assert core.next_send() == 0.5
    assert core.due(0.375) == []
    assert core.due(0.625) == [(0, b"b")]  # 0.125 s late
    core.receive(0, [b"A", b"B"], 0.75)
    assert core.next_send() == 1.5
    assert core.due(2.0) == [(0, b"c")]
    assert core.receive(0, [b"C"], 2.0) == 1
    assert core.finished()
    summary = core.summary(2.0)
    assert (summary.sent, summary.received, summary.lost) == (3, 3, 0)
    # 'b' was meant to leave at 0.5: its latency counts the time its send was late.
    assert summary.latency_us == {750_000: 1, 250_000: 1, 500_000: 1}
    assert summary.late_sends == 2
    assert summary.max_send_lag == 0.5
    assert summary.duration == 2.0


def test_max_speed_keeps_concurrency_in_flight() -> None:
    items = tuple((float(i), 0, b"%d" % i) for i in range(5))
    core = ReplayCore(plan(*items), rule=ANY, timeout=1.0, start=0.0, speed=None,
                      concurrency=2)
    assert core.due(0.0) == [(0, b"0"), (0, b"1")]
    assert core.due(0.0) == []
    assert core.next_send() is None
    core.receive(0, [b"r"], 0.001)
    assert core.due(0.001) == [(0, b"2")]
    assert core.expire(1.0) == 1  # '1' went unanswered
    assert core.due(1.0) == [(0, b"3")]
    summary = core.summary(1.0)
    assert (summary.sent, summary.received, summary.lost, summary.in_flight) == (4, 1, 1, 2)


def test_order_pairs_each_flow_with_its_own_oldest_request() -> None:
    core = ReplayCore(plan((0.0, 0, b"a1"), (0.0, 1, b"b1"), (0.0, 0, b"a2")), rule=ANY,
                      timeout=1.0, start=0.0, speed=1.0)
    core.due(0.0)
    core.receive(1, [b"reply"], 0.002)
    core.receive(0, [b"reply", b"reply"], 0.004)
    core.receive(0, [b"surplus"], 0.005)
    summary = core.summary(0.005)
    # b1 answered before a1 is no reordering: they are two clients.
    assert (summary.received, summary.wrong, summary.reordered) == (3, 1, 0)
    assert summary.latency_us == {2000: 1, 4000: 2}


def test_a_rule_matches_replies_out_of_order_and_tells_late_from_wrong() -> None:
    core = ReplayCore(plan((0.0, 0, b"Michael"), (0.0, 0, b"Tracy"), (0.0, 0, b"Sarah")),
                      rule=reply_rule("greeting"), timeout=1.0, start=0.0, speed=1.0)
    core.due(0.0)
    core.receive(0, [b"Hello, Tracy!", b"Hello, Michael!", b"Hello, Tracy!",
                     b"Hello, Nobody!"], 0.001)
    assert core.expire(1.0) == 1
    core.receive(0, [b"Hello, Sarah!"], 1.5)
    summary = core.summary(1.5)
    assert summary.sent == summary.received + summary.lost == 3
    assert (summary.received, summary.lost) == (2, 1)
    assert (summary.duplicates, summary.wrong, summary.late, summary.reordered) == (1, 1, 1, 1)


def test_a_stopped_replay_sends_nothing_more_and_waits_for_what_is_in_flight() -> None:
    core = ReplayCore(plan((0.0, 0, b"a"), (1.0, 0, b"b")), rule=ANY, timeout=1.0, start=0.0)
    core.due(0.0)
    core.stop(0.5)
    assert not core.sending()
    assert core.due(2.0) == []
    assert not core.finished()
    core.expire(2.0)
    assert core.finished()
    assert core.summary(2.0).lost == 1


def test_a_reply_on_a_socket_that_does_not_exist_is_wrong() -> None:
    core = ReplayCore(plan((0.0, 0, b"a")), rule=ANY, timeout=1.0, start=0.0)
    assert core.receive(7, [b"x"], 0.0) == 0
    assert core.wrong == 1


@pytest.mark.parametrize(("speed", "timeout", "concurrency"),
                         [(0.0, 1.0, 1), (float("inf"), 1.0, 1), (1.0, 0.0, 1), (None, 1.0, 0)])
def test_impossible_settings_are_usage_errors(speed: float | None, timeout: float,
                                              concurrency: int) -> None:
    with pytest.raises(UsageError):
        ReplayCore(plan((0.0, 0, b"a")), rule=ANY, timeout=timeout, start=0.0, speed=speed,
                   concurrency=concurrency)


def test_speed_text() -> None:
    assert parse_speed("max") is None
    assert parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(UsageError, match="--speed"):
            parse_speed(bad)
    assert replay_rule("order") is ANY
    assert replay_rule("echo") is reply_rule("echo")


def test_requests_are_the_datagrams_to_the_replay_port() -> None:
    frames = conversation(names=(b"Michael", b"Tracy", b"Sarah"))
    frames.append((1_700_000_001.0, frame(LINKTYPE_ETHERNET,
                                          ip_udp(("127.0.0.1", 5353), ("127.0.0.1", 53), b"q"))))
    capture = parse_capture_untrusted(pcap_file(LINKTYPE_ETHERNET, frames))
    chosen, source = select_requests(capture, 9999)
    assert [item.payload for item in chosen.items] == [b"Michael", b"Tracy", b"Sarah"]
    assert [item.offset for item in chosen.items] == pytest.approx([0.0, 0.01, 0.02])
    assert (source.requests, source.flows, source.other_datagrams) == (3, 1, 4)
    assert select_requests(capture, 53)[1].requests == 1
    with pytest.raises(CaptureError, match=r"no UDP datagram to port 7 .*9999 \(3\)"):
        select_requests(capture, 7)


_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 0.5)),
    st.tuples(st.just("reply"), st.integers(0, 3), st.integers(0, 7)),
    st.tuples(st.just("junk"), st.integers(0, 3)),
    st.tuples(st.just("stop")),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(offsets=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=12),
       flows=st.integers(1, 3), speed=st.sampled_from([None, 0.5, 1.0, 4.0]),
       expect=st.sampled_from(["order", "greeting"]), events=_EVENTS)
def test_every_request_ends_received_or_lost(offsets: list[float], flows: int,
                                             speed: float | None, expect: str,
                                             events: list[tuple[object, ...]]) -> None:
    """Whatever arrives when, each replayed request is counted once: received or lost."""
    items = tuple(ReplayItem(offset, index % flows, b"n%d" % index)
                  for index, offset in enumerate(sorted(offsets)))
    core = ReplayCore(ReplayPlan(items, flows), rule=replay_rule(expect), timeout=0.3,
                      start=0.0, speed=speed, concurrency=2)
    now = 0.0
    for event in events:
        core.expire(now)
        core.due(now)
        if event[0] == "advance":
            now += float(event[1])  # type: ignore[arg-type]
        elif event[0] == "reply":
            index = int(event[2]) % len(items)  # type: ignore[call-overload]
            core.receive(int(event[1]), [b"Hello, n%d!" % index], now)  # type: ignore[call-overload]
        elif event[0] == "junk":
            core.receive(int(event[1]), [b"\xff junk"], now)  # type: ignore[call-overload]
        else:
            core.stop(now)
        summary = core.summary(now)
        assert summary.sent == summary.received + summary.lost + summary.in_flight
    while not core.finished():  # the run's end: time passes until nothing is in flight
        now += 0.1
        core.expire(now)
        core.due(now)
    summary = core.summary(now)
    assert summary.sent == summary.received + summary.lost
    assert summary.in_flight == 0
    assert summary.sent <= len(items)
    assert sum(summary.latency_us.values()) == summary.received


def test_intervals_stream_as_they_close_and_are_the_summary_s() -> None:
    """``bench --replay --json-stream``: what is handed out as intervals close is the
    summary's time series (empty intervals included), and the counts add up."""
    core = ReplayCore(plan((0.0, 0, b"a"), (0.1, 0, b"b"), (0.75, 0, b"c")), rule=ANY,
                      timeout=0.3, start=0.0, speed=1.0, interval=0.25)
    streamed: list[IntervalStats] = []
    core.due(0.0)
    core.receive(0, [b"A"], 0.05)
    core.due(0.1)  # 'b' gets no reply: lost at 0.4
    assert core.intervals_closed(0.2, 0) == []  # the first interval is still open
    streamed += core.intervals_closed(0.26, len(streamed))
    assert [(i.start, i.sent, i.received, i.lost) for i in streamed] == [(0.0, 2, 1, 0)]
    core.expire(0.4)
    core.due(0.8)
    streamed += core.intervals_closed(0.8, len(streamed))
    assert [(i.sent, i.lost) for i in streamed] == [(2, 0), (0, 1), (0, 0)]  # 0.5-0.75: empty
    core.receive(0, [b"C"], 0.9)
    summary = core.summary(0.9)
    assert list(summary.intervals[:len(streamed)]) == streamed
    streamed += summary.intervals[len(streamed):]
    assert sum(i.sent for i in streamed) == summary.sent == 3
    assert sum(i.received for i in streamed) == summary.received == 2
    assert sum(i.lost for i in streamed) == summary.lost == 1
