"""Tier (a): the retry schedule on a clock driven by hand."""

from __future__ import annotations

import random

import pytest

from udpkit.core.errors import UsageError
from udpkit.core.retry import RetryPolicy, RetrySchedule


def test_default_waits_fill_the_deadline_exactly() -> None:
    policy = RetryPolicy(timeout=15.0, retries=3, jitter=0)
    assert [policy.nominal_wait(k) for k in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_schedule_without_jitter() -> None:
    schedule = RetrySchedule(RetryPolicy(timeout=15.0, retries=3, jitter=0), now=100.0,
                             rng=random.Random(0))
    assert schedule.deadline == 115.0
    assert schedule.start_attempt(100.0) == 101.0
    assert schedule.start_attempt(101.0) == 103.0
    assert schedule.start_attempt(103.0) == 107.0
    assert schedule.start_attempt(107.0) == 115.0  # the last attempt runs to the deadline
    assert schedule.attempts == 4
    assert not schedule.can_retry(115.0)


def test_jitter_stays_within_its_bounds_and_never_passes_the_deadline() -> None:
    policy = RetryPolicy(timeout=3.0, retries=5, jitter=0.25, first_wait=0.5)
    rng = random.Random(7)
    for _ in range(200):
        schedule = RetrySchedule(policy, now=0.0, rng=rng)
        now = 0.0
        while schedule.can_retry(now):
            nominal = policy.nominal_wait(schedule.attempts)
            timer = schedule.start_attempt(now)
            assert timer <= schedule.deadline
            if timer < schedule.deadline:
                assert 0.75 * nominal <= timer - now <= 1.25 * nominal
            now = timer
        assert now == pytest.approx(3.0) or schedule.attempts == policy.attempts


def test_max_wait_caps_the_backoff() -> None:
    policy = RetryPolicy(timeout=100.0, retries=10, first_wait=1.0, max_wait=4.0)
    assert policy.nominal_wait(5) == 4.0


def test_late_attempt_gets_only_what_remains() -> None:
    schedule = RetrySchedule(RetryPolicy(timeout=1.0, retries=3, first_wait=0.9, jitter=0),
                             now=0.0, rng=random.Random(0))
    schedule.start_attempt(0.0)
    assert schedule.start_attempt(0.9) == 1.0  # 1.8 s of backoff, 0.1 s left


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"retries": -1},
        {"backoff": 0.5},
        {"jitter": 1.0},
        {"first_wait": 0.0},
    ],
)
def test_bad_policies_are_usage_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
