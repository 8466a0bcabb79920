"""Bench figures that must not mislead: percentiles never above max, no fake
collapse at the end of a plot (issue 12)."""

from __future__ import annotations

from udpkit.bench.config import BenchConfig
from udpkit.bench.plot import full_intervals
from udpkit.bench.result import BenchResult
from udpkit.core.load_stats import IntervalStats, LoadSummary


def test_no_percentile_is_printed_above_max() -> None:
    """Regression: ``p99.99`` came out above ``max`` (through the proxy): the
    histogram answers with its bucket's upper edge, above the largest value."""
    latency = {50_000: 900, 123_457: 1}  # 123,457 us lies inside a wider bucket
    summary = LoadSummary(sent=901, received=901, duration=1.0, latency_us=latency)
    result = BenchResult.build(BenchConfig(host="127.0.0.1", port=9), summary)
    assert result.percentiles_us["max"] == 123_457
    assert all(value <= 123_457 for value in result.percentiles_us.values())


def _interval(start: float, received: int) -> IntervalStats:
    return IntervalStats(start=start, sent=received, received=received, lost=0,
                         latency_us={100: received})


def test_a_short_last_interval_is_not_drawn_as_a_collapse() -> None:
    """Regression: every plot ended in a fake collapse: the last interval lasted
    a few milliseconds but its replies were divided by the full second."""
    intervals = (_interval(0.0, 1000), _interval(1.0, 1000), _interval(2.0, 4))
    summary = LoadSummary(sent=2004, received=2004, duration=2.004, intervals=intervals,
                          latency_us={100: 2004})
    result = BenchResult.build(BenchConfig(host="127.0.0.1", port=9), summary)
    kept, widths = full_intervals(result)
    assert [item.start for item in kept] == [0.0, 1.0]
    assert widths == [1.0, 1.0]


def test_a_partial_last_interval_is_weighted_by_its_length() -> None:
    intervals = (_interval(0.0, 1000), _interval(1.0, 600))
    summary = LoadSummary(sent=1600, received=1600, duration=1.6, intervals=intervals,
                          latency_us={100: 1600})
    result = BenchResult.build(BenchConfig(host="127.0.0.1", port=9), summary)
    kept, widths = full_intervals(result)
    rates = [item.received / width for item, width in zip(kept, widths, strict=True)]
    assert [round(rate) for rate in rates] == [1000, 1000]
