"""The result of a ``udpkit bench`` run: counts, an HDR histogram, a time series.

Rule: one frozen object holds everything a report, a JSON document, a plot or
a test needs; latency percentiles come from an HdrHistogram (3 significant
digits, microseconds) so that histograms of several processes merge exactly.
``hdrhistogram`` is imported here only, when a result is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from udpkit.bench.config import BenchConfig
from udpkit.core.load_stats import IntervalStats, LoadSummary, percentile_of_counts
from udpkit.core.pacing import LAG_FLAG_FRACTION, generator_error
from udpkit.core.slo import PERCENTILE_METRIC, Slo, SloOutcome, check_slos, parse_slo

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
)

_LOWEST_US = 1
_HIGHEST_US = 3600 * 1_000_000
_DIGITS = 3

HISTOGRAM_SETTINGS: Mapping[str, int] = {
    "lowest_us": _LOWEST_US, "highest_us": _HIGHEST_US, "significant_digits": _DIGITS,
}
"""The HdrHistogram's range and precision, written into every JSON result: only
histograms of equal settings add up exactly (``bench merge`` checks)."""

SCHEMA = "udpkit.bench/1"
"""The ``schema`` of a JSON result; a change that breaks readers (``bench merge``) bumps it."""

FELL_BEHIND_FRACTION = 0.01
"""Open loop: the generator fell behind when more sends than this were late."""


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def histogram_of(latency_us: Mapping[int, int]) -> Any:
    """An HdrHistogram of a value -> count table (microseconds)."""
    histogram = new_histogram()
    for value, count in latency_us.items():
        histogram.record_value(min(max(value, 0), _HIGHEST_US), count)
    return histogram


def encode_histogram(histogram: Any) -> str:
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode_histogram(encoded: str) -> Any:
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode("ascii"))
    return histogram


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What one run measured.  Latencies are in microseconds unless a name says ms."""

    config: BenchConfig
    summary: LoadSummary
    histogram: str = field(repr=False)
    """The latency HdrHistogram, base64-encoded (``hdrh`` ``encode()``)."""
    percentiles_us: Mapping[str, int] = field(default_factory=dict)
    """``p50`` .. ``p99.99`` and ``max`` (exact), microseconds."""
    mean_us: float = 0.0
    processes: int = 1

    @classmethod
    def build(cls, config: BenchConfig, summary: LoadSummary, histogram: Any = None,
              processes: int = 1) -> BenchResult:
        if histogram is None:
            histogram = histogram_of(summary.latency_us)
        exact_max = max(summary.latency_us) if summary.latency_us else 0
        return cls.from_histogram(config, summary, histogram, exact_max, processes)

    @classmethod
    def from_histogram(cls, config: BenchConfig, summary: LoadSummary, histogram: Any,
                       exact_max: int, processes: int = 1) -> BenchResult:
        """A result whose percentiles come from ``histogram`` (an ``HdrHistogram``) and
        whose max is ``exact_max`` microseconds: the one place they are computed."""
        percentiles: dict[str, int] = {}
        for name, percent in PERCENTILES:
            # The histogram answers with its bucket's upper edge (3 significant
            # digits), which can lie above the largest value measured: clamp, so
            # no percentile is ever printed above max.
            percentiles[name] = min(int(histogram.get_value_at_percentile(percent)), exact_max)
        percentiles["max"] = exact_max
        mean = float(histogram.get_mean_value()) if histogram.get_total_count() else 0.0
        return cls(config, summary, encode_histogram(histogram), percentiles, mean, processes)

    # -- the figures ------------------------------------------------------------

    @property
    def sent(self) -> int:
        return self.summary.sent

    @property
    def received(self) -> int:
        return self.summary.received

    @property
    def lost(self) -> int:
        return self.summary.lost

    @property
    def duplicates(self) -> int:
        return self.summary.duplicates

    @property
    def late(self) -> int:
        return self.summary.late

    @property
    def wrong(self) -> int:
        return self.summary.wrong

    @property
    def reordered(self) -> int:
        return self.summary.reordered

    @property
    def duration(self) -> float:
        return self.summary.duration

    @property
    def throughput(self) -> float:
        """Replies per second over the measured window."""
        return self.summary.throughput

    @property
    def loss(self) -> float:
        """Fraction of measured requests lost (0..1)."""
        return self.summary.loss

    @property
    def send_rate(self) -> float:
        """Requests sent per second over the measured window."""
        return self.summary.sent / self.duration if self.duration > 0 else 0.0

    @property
    def fell_behind(self) -> bool:
        """Open loop: the generator could not keep to the asked rate."""
        if self.config.rate is None or self.sent == 0:
            return False
        return self.summary.late_sends > FELL_BEHIND_FRACTION * self.sent

    @property
    def send_lag_us(self) -> dict[str, int]:
        """Open loop: the send lag's ``p50`` .. ``p99.9`` and ``max`` (exact, microseconds);
        empty in a closed loop."""
        return _lag_percentiles(self.summary.send_lag_us)

    @property
    def receive_lag_us(self) -> dict[str, int]:
        """Where the kernel timestamps arrivals: arrival-to-read percentiles (microseconds)."""
        return _lag_percentiles(self.summary.receive_lag_us)

    @property
    def generator_flagged(self) -> bool:
        """Open loop: the send lag's p99 exceeds :data:`~udpkit.core.pacing.LAG_FLAG_FRACTION`
        of the latency p50, so the generator's own error shows in the figures."""
        lag = self.send_lag_us
        if not lag or not self.received:
            return False
        return generator_error(lag["p99"], self.percentiles_us["p50"])

    def latency_ms(self, name: str) -> float:
        """A percentile (``p50`` ... ``max``) in milliseconds."""
        return self.percentiles_us[name] / 1000.0

    def check(self, slos: Iterable[str | Slo]) -> tuple[SloOutcome, ...]:
        """The thresholds (``"p99<5ms"`` or parsed :class:`~udpkit.core.slo.Slo`) against
        this run: the Python side of ``udpkit bench --slo``."""
        parsed = tuple(parse_slo(slo) if isinstance(slo, str) else slo for slo in slos)
        return check_slos(parsed, self.slo_figures(parsed))

    def slo_figures(self, slos: Iterable[Slo]) -> dict[str, float | None]:
        """The figures the thresholds name, in their terms (latency in ms, loss as a
        fraction); a latency of a run with no replies is ``None`` (not measured)."""
        figures: dict[str, float | None] = {
            "loss": self.loss if self.sent else None,
            "duplicates": float(self.duplicates),
            "throughput": self.throughput,
            "max": self.latency_ms("max") if self.received else None,
        }
        histogram = None
        for slo in slos:
            match = PERCENTILE_METRIC.match(slo.metric)
            if match is None or slo.metric in figures:
                continue
            if not self.received:
                figures[slo.metric] = None
                continue
            if histogram is None:
                histogram = self.hdr_histogram()
            value = min(int(histogram.get_value_at_percentile(float(match[1]))),
                        self.percentiles_us["max"])
            figures[slo.metric] = value / 1000.0
        return figures

    def hdr_histogram(self) -> Any:
        """The latency histogram as an ``hdrh.histogram.HdrHistogram``."""
        return decode_histogram(self.histogram)

    def timeline(self) -> list[IntervalStats]:
        return list(self.summary.intervals)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready document of the run."""
        config = self.config
        summary = self.summary
        intervals = []
        for item in summary.intervals:
            hist = histogram_of(item.latency_us)
            count = sum(item.latency_us.values())
            intervals.append({
                "start_s": round(item.start, 6),
                "sent": item.sent,
                "received": item.received,
                "lost": item.lost,
                "p50_us": int(hist.get_value_at_percentile(50)) if count else None,
                "p99_us": int(hist.get_value_at_percentile(99)) if count else None,
                "max_us": max(item.latency_us) if count else None,
            })
        return {
            "schema": SCHEMA,
            "udpkit_version": _version(),
            "started_at": summary.started_at,
            "target": {"host": config.host, "port": config.port, "transport": config.transport},
            "mode": "open" if config.rate is not None else "closed",
            "config": {
                "concurrency": config.concurrency,
                "rate": config.rate,
                "poisson": config.poisson,
                "duration_s": config.duration,
                "requests": config.requests,
                "warmup_s": config.warmup,
                "timeout_s": config.timeout,
                "template": config.template,
                "size": config.size,
                "expect": config.expect,
                "connections": config.connections,
                "depth": config.depth,
                "procs": self.processes,
            },
            "sent": summary.sent,
            "received": summary.received,
            "lost": summary.lost,
            "duplicates": summary.duplicates,
            "late": summary.late,
            "wrong": summary.wrong,
            "reordered": summary.reordered,
            "loss": summary.loss,
            "duration_s": summary.duration,
            "throughput_rps": self.throughput,
            "send_rate_rps": self.send_rate,
            "latency_us": dict(self.percentiles_us),
            "latency_mean_us": self.mean_us,
            "latency_from": "intended send time" if config.rate is not None else "send time",
            "late_sends": summary.late_sends,
            "max_send_lag_s": summary.max_send_lag,
            "fell_behind": self.fell_behind,
            "paced_by": summary.paced_by or None,
            "send_lag_us": _lag_document(summary.send_lag_us),
            "receive_lag_us": _lag_document(summary.receive_lag_us),
            "generator_flagged": self.generator_flagged,
            "generator_flag_fraction": LAG_FLAG_FRACTION,
            "interrupted": summary.interrupted,
            "intervals": intervals,
            "interval_s": config.interval,
            "histogram": dict(HISTOGRAM_SETTINGS),
            "hdr_histogram": self.histogram,
        }


def _version() -> str:
    from udpkit import __version__

    return __version__


_LAG_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def _lag_percentiles(counts: Mapping[int, int]) -> dict[str, int]:
    if not counts:
        return {}
    out = {name: percentile_of_counts(counts, percent) for name, percent in _LAG_PERCENTILES}
    out["max"] = max(counts)
    return out


def _lag_document(counts: Mapping[int, int]) -> dict[str, Any] | None:
    """Percentiles, count and the whole histogram (microseconds -> count) of a lag."""
    if not counts:
        return None
    return {
        **_lag_percentiles(counts),
        "count": sum(counts.values()),
        "histogram": {str(value): counts[value] for value in sorted(counts)},
    }
