"""Tier (a): the worker restart policy, clock driven by hand."""

from __future__ import annotations

from udpkit.core.restarts import RestartPolicy


def test_backoff_doubles_per_recent_restart_of_a_slot_and_is_capped() -> None:
    policy = RestartPolicy(max_restarts=100, first_delay=0.1, max_delay=1.0)
    delays = [policy.delay(1, now=float(t)) for t in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy.delay(2, now=6.0) == 0.1  # another slot has its own backoff


def test_backoff_forgets_restarts_older_than_the_window() -> None:
    policy = RestartPolicy(window=60.0, first_delay=0.1)
    assert policy.delay(1, now=0.0) == 0.1
    assert policy.delay(1, now=10.0) == 0.2
    assert policy.delay(1, now=75.0) == 0.1  # both earlier restarts are over a minute old


def test_gives_up_after_max_restarts_within_the_window() -> None:
    policy = RestartPolicy(max_restarts=3, window=60.0)
    assert all(policy.delay(slot, now=1.0) is not None for slot in (1, 2, 3))
    assert policy.recent(now=1.0) == 3
    assert policy.delay(1, now=2.0) is None
    assert policy.delay(1, now=61.5) is not None  # the window moved on
