"""``--plot FILE.png``: latency percentiles and throughput over time.

Rule: matplotlib is an optional extra (``pip install 'udpkit[plot]'``),
imported here only, inside the functions, with the file-only Agg backend.
A rate is per the seconds an interval really lasted (see :func:`full_intervals`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from udpkit.bench.result import BenchResult
from udpkit.core.errors import UsageError
from udpkit.core.load_stats import IntervalStats, percentile_of_counts


def check_available() -> None:
    """Raise :class:`UsageError` when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'udpkit[plot]'")


def full_intervals(result: BenchResult) -> tuple[list[IntervalStats], list[float]]:
    """The intervals worth a point, with the seconds each one lasted.

    The run rarely ends on an interval's edge: its last interval may last a few
    milliseconds, and its replies divided by the full width would draw a
    collapse that never happened.  Each interval's rate is per the time it
    really covered; a last interval shorter than half the width is dropped
    (unless it is the only one).
    """
    width = result.config.interval or 1.0
    items = [item for item in result.timeline() if item.sent or item.received or item.lost]
    widths = [max(min(width, result.duration - item.start), 1e-9) for item in items]
    if len(items) > 1 and widths[-1] < width / 2:
        items, widths = items[:-1], widths[:-1]
    return items, widths


def plot(result: BenchResult, path: str) -> None:
    """Write a PNG: latency p50/p99/max per interval above, throughput and loss below."""
    check_available()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intervals, widths = full_intervals(result)
    times = [item.start + width for item, width in zip(intervals, widths, strict=True)]
    series: dict[str, list[float]] = {"p50": [], "p99": [], "max": []}
    for item in intervals:
        counts = item.latency_us
        for name, percent in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
            series[name].append(percentile_of_counts(counts, percent) / 1000.0 if counts else 0.0)
    throughput = [item.received / width for item, width in zip(intervals, widths, strict=True)]
    lost = [item.lost / width for item, width in zip(intervals, widths, strict=True)]

    figure: Any
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    try:
        for name, values in series.items():
            top.plot(times, values, label=name, marker=".")
        top.set_ylabel("latency (ms)")
        top.set_yscale("log")
        top.legend(loc="upper left")
        top.grid(True, which="both", alpha=0.3)
        percentiles = ", ".join(
            f"{name} {result.latency_ms(name):.3f}" for name in ("p50", "p99", "p99.9", "max")
        )
        top.set_title(
            f"udpkit bench {result.config.host}:{result.config.port} "
            f"({result.config.transport}): {result.throughput:,.0f} replies/s, {percentiles} ms",
            fontsize=9,
        )
        bottom.plot(times, throughput, label="replies/s", marker=".")
        bottom.plot(times, lost, label="lost/s", marker=".")
        bottom.set_xlabel("seconds after warm-up")
        bottom.set_ylabel("per second")
        bottom.legend(loc="upper left")
        bottom.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
