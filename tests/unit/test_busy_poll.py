"""Tier (a): :class:`BusyPoll`, the spin / yield / sleep decisions, with a hand-driven clock.

No socket, no event loop: the facts the glue reports (a wake-up or a spin took
``n`` datagrams at ``now``) go in; what the glue must do comes out.
"""

from __future__ import annotations

import pytest

from udpkit.core.busy_poll import MAX_DURATION, MAX_SLICE, Action, BusyPoll, check_duration

US = 1e-6


def test_off_never_spins() -> None:
    poll = BusyPoll(0.0)
    assert not poll.enabled
    assert poll.woke(10.0, 5) is Action.SLEEP
    assert not poll.spinning
    assert poll.stats.spins == 0


def test_a_wake_up_that_found_nothing_goes_back_to_sleep() -> None:
    """An idle server (or a spurious wake-up) never starts spinning: no CPU spent."""
    poll = BusyPoll(50 * US)
    assert poll.woke(10.0, 0) is Action.SLEEP
    assert not poll.spinning


def test_a_wake_up_with_work_spins_for_up_to_the_duration() -> None:
    poll = BusyPoll(50 * US)
    assert poll.woke(10.0, 1) is Action.SPIN
    assert poll.spinning
    assert poll.spin_time(10.0) == pytest.approx(50 * US)
    assert poll.spin_time(10.0 + 20 * US) == pytest.approx(30 * US)


def test_an_idle_spin_backs_off_at_once_after_the_duration() -> None:
    poll = BusyPoll(50 * US)
    poll.woke(10.0, 1)
    assert poll.polled(10.0 + 50 * US, 0) is Action.SLEEP
    assert not poll.spinning
    assert poll.stats.sleeps == 1
    assert poll.spin_time(10.0 + 60 * US) == 0.0


def test_each_datagram_taken_spinning_extends_the_spin() -> None:
    """A steady stream (one request every 30 us) never pays a wake-up: the spin
    that finds work keeps going for another duration."""
    poll = BusyPoll(50 * US)
    now = 10.0
    assert poll.woke(now, 1) is Action.SPIN
    for _ in range(100):
        now += 30 * US
        action = poll.polled(now, 1)
        if action is Action.YIELD:  # the loop's turn, between slices
            action = poll.resumed(now)
        assert action is Action.SPIN
    assert poll.stats.found_spinning == 100
    assert poll.stats.sleeps == 0
    assert poll.polled(now + 50 * US, 0) is Action.SLEEP


def test_a_spin_never_keeps_the_loop_waiting_longer_than_a_slice() -> None:
    """Fairness: however busy the socket, the loop (TCP, timers) gets a turn once
    per slice, and the spin resumes after it with a new slice."""
    poll = BusyPoll(5e-3)
    assert poll.slice == MAX_SLICE
    now = 10.0
    poll.woke(now, 1)
    turns = 0
    for _ in range(1000):
        assert poll.spin_time(now) <= MAX_SLICE
        now += 10 * US
        action = poll.polled(now, 3)
        if action is Action.YIELD:
            turns += 1
            now += 5 * US  # the loop's turn
            assert poll.resumed(now) is Action.SPIN
        else:
            assert action is Action.SPIN
    # 1000 polls of 10 us, plus the turns: a turn at least every MAX_SLICE.
    assert turns >= (1000 * 10 * US) / (MAX_SLICE + 15 * US)
    assert poll.stats.yields == turns


def test_the_slice_is_the_duration_when_that_is_shorter() -> None:
    poll = BusyPoll(20 * US)
    assert poll.slice == pytest.approx(20 * US)


def test_a_yield_when_the_slice_ends_before_the_idle_time() -> None:
    poll = BusyPoll(1e-3, max_slice=100 * US)
    poll.woke(10.0, 1)
    assert poll.spin_time(10.0) == pytest.approx(100 * US)
    assert poll.polled(10.0 + 100 * US, 0) is Action.YIELD
    assert poll.spinning  # still out of the loop's interest set, between slices


def test_a_long_turn_of_the_loop_ends_the_spin() -> None:
    """If the loop's turn (a slow TCP handler, say) outlasted the idle time, the
    socket goes back to the loop rather than spinning on an idle stream."""
    poll = BusyPoll(1e-3, max_slice=100 * US)
    poll.woke(10.0, 1)
    assert poll.polled(10.0 + 100 * US, 0) is Action.YIELD
    assert poll.resumed(10.0 + 2e-3) is Action.SLEEP
    assert not poll.spinning


def test_stop_ends_spinning_whatever_comes_next() -> None:
    poll = BusyPoll(50 * US)
    poll.woke(10.0, 1)
    poll.stop()
    assert poll.polled(10.0, 5) is Action.SLEEP
    assert poll.resumed(10.0) is Action.SLEEP


def test_sleep_then_wake_starts_a_new_spin() -> None:
    poll = BusyPoll(50 * US)
    poll.woke(10.0, 1)
    assert poll.polled(10.0 + 60 * US, 0) is Action.SLEEP
    assert poll.woke(11.0, 2) is Action.SPIN
    assert poll.stats.spins == 2
    assert poll.spin_time(11.0) == pytest.approx(50 * US)


@pytest.mark.parametrize("bad", [-1e-6, MAX_DURATION * 2, float("nan"), float("inf")])
def test_durations_out_of_range_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="busy-poll duration"):
        check_duration(bad)
    with pytest.raises(ValueError, match="busy-poll duration"):
        BusyPoll(bad)
