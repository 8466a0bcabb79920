"""Pass/fail thresholds on a load test's result: ``p99<5ms``, ``loss<0.1%``,
``throughput>50000`` (``udpkit bench --slo``).

Rule: a threshold is parsed once, before any load is sent, by :func:`parse_slo`, which
raises only :class:`~udpkit.core.errors.UsageError` saying what it expected; it is checked
against measured figures, never re-parsed.  A threshold on a figure that was not measured
(a percentile of a run with no replies) fails: a job must not pass on no evidence.

Grammar: ``METRIC OP VALUE``, ``OP`` one of ``<``, ``<=``, ``>``, ``>=``:

* ``pNN`` / ``pNN.NN`` (a latency percentile, e.g. ``p50``, ``p99.9``) and ``max``:
  a time, ``us``, ``ms`` (the default) or ``s``;
* ``loss``: a fraction of the measured requests, ``0.001`` or ``0.1%``;
* ``duplicates``: replies received twice, a count;
* ``throughput``: replies per second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from udpkit.core.errors import UsageError

Compare = Callable[[float, float], bool]
_OPERATORS: dict[str, Compare] = {
    "<=": lambda measured, limit: measured <= limit,
    ">=": lambda measured, limit: measured >= limit,
    "<": lambda measured, limit: measured < limit,
    ">": lambda measured, limit: measured > limit,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_SYNTAX = re.compile(
    r"^\s*(?P<metric>p\d{1,3}(?:\.\d{1,4})?|max|loss|duplicates|throughput)\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(?P<unit>[a-z%/]*)\s*$"
)
PERCENTILE_METRIC = re.compile(r"^p(\d{1,2}(?:\.\d{1,4})?)$")


@dataclass(frozen=True, slots=True)
class Slo:
    """One threshold: ``metric op limit``; latencies in ms, loss as a fraction."""

    text: str
    """As the user wrote it (what reports show)."""
    metric: str
    op: str
    limit: float

    def passes(self, measured: float | None) -> bool:
        return measured is not None and _OPERATORS[self.op](measured, self.limit)

    def show(self, measured: float | None) -> str:
        """A measured value in this threshold's terms (``12.3 ms``, ``0.05%``)."""
        if measured is None:
            return "not measured"
        if self.metric == "loss":
            return f"{measured * 100:.3g}%"
        if self.metric == "duplicates":
            return f"{measured:.0f}"
        if self.metric == "throughput":
            return f"{measured:,.0f}/s"
        return f"{measured:.3g} ms"


@dataclass(frozen=True, slots=True)
class SloOutcome:
    slo: Slo
    measured: float | None
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return {"slo": self.slo.text, "metric": self.slo.metric, "op": self.slo.op,
                "limit": self.slo.limit, "measured": self.measured, "passed": self.passed}

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        measured = "not measured" if self.measured is None else (
            f"measured {self.slo.show(self.measured)}")
        return f"SLO {self.slo.text}: {verdict} ({measured})"


def parse_slo(text: str) -> Slo:
    """``p99<5ms`` and the like (see the module docstring); :class:`UsageError` if not."""
    match = _SYNTAX.match(text.lower())
    if match is None:
        raise UsageError(
            f"--slo {text!r}: expected METRIC OP VALUE, e.g. 'p99<5ms', 'loss<0.1%', "
            "'throughput>50000' (metrics: pNN, max, loss, duplicates, throughput)"
        )
    metric, op, unit = match["metric"], match["op"], match["unit"]
    value = float(match["value"])
    if metric.startswith("p") and not 0 < float(metric[1:]) < 100:
        raise UsageError(f"--slo {text!r}: a percentile is between p0 and p100 (exclusive)")
    if metric.startswith("p") or metric == "max":
        if unit not in ("", *_TIME_UNITS):
            raise UsageError(f"--slo {text!r}: a latency is in us, ms or s")
        value *= _TIME_UNITS.get(unit or "ms", 1.0)
    elif metric == "loss":
        if unit not in ("", "%"):
            raise UsageError(f"--slo {text!r}: loss is a fraction (0.001) or a percentage (0.1%)")
        value = value / 100 if unit == "%" else value
        if value > 1:
            raise UsageError(f"--slo {text!r}: loss is at most 100%")
    elif unit not in ("", "/s", "rps") or (metric == "duplicates" and unit):
        raise UsageError(f"--slo {text!r}: {metric} takes a plain number")
    if not math.isfinite(value):
        raise UsageError(f"--slo {text!r}: the value must be finite")
    return Slo(text.strip(), metric, op, value)


def parse_slos(texts: Iterable[str]) -> tuple[Slo, ...]:
    return tuple(parse_slo(text) for text in texts)


def check_slos(slos: Iterable[Slo], figures: Mapping[str, float | None]) -> tuple[SloOutcome, ...]:
    """Each threshold against ``figures`` (metric name -> measured value, as :class:`Slo`
    counts it; a missing or ``None`` figure was not measured and fails)."""
    outcomes = []
    for slo in slos:
        measured = figures.get(slo.metric)
        outcomes.append(SloOutcome(slo, measured, slo.passes(measured)))
    return tuple(outcomes)
