"""Tier (a): bench thresholds, parsed once and checked against figures."""

from __future__ import annotations

import pytest

from udpkit.core.errors import UsageError
from udpkit.core.slo import check_slos, parse_slo, parse_slos


@pytest.mark.parametrize(("text", "metric", "op", "limit"), [
    ("p99<5ms", "p99", "<", 5.0),
    ("p99.9 <= 250us", "p99.9", "<=", 0.25),
    ("P50<1s", "p50", "<", 1000.0),
    ("max<20", "max", "<", 20.0),
    ("loss<0.1%", "loss", "<", 0.001),
    ("loss<=0.01", "loss", "<=", 0.01),
    ("duplicates<=0", "duplicates", "<=", 0.0),
    ("throughput>50000", "throughput", ">", 50000.0),
    ("throughput>=1e4/s", "throughput", ">=", 10000.0),
])
def test_thresholds_parse_into_their_terms(text: str, metric: str, op: str, limit: float) -> None:
    slo = parse_slo(text)
    assert (slo.metric, slo.op) == (metric, op)
    assert slo.limit == pytest.approx(limit)
    assert slo.text == text.strip()


@pytest.mark.parametrize(("text", "says"), [
    ("p99", "expected METRIC OP VALUE"),
    ("p99=5ms", "expected METRIC OP VALUE"),
    ("latency<5ms", "expected METRIC OP VALUE"),
    ("p100<5ms", "between p0 and p100"),
    ("p0<5ms", "between p0 and p100"),
    ("p99<5kg", "us, ms or s"),
    ("loss<5ms", "fraction"),
    ("loss<200%", "at most 100%"),
    ("duplicates<1%", "plain number"),
    ("throughput>5ms", "plain number"),
    ("p99<1e999", "finite"),
])
def test_a_bad_threshold_says_what_was_expected(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_slo(text)


def test_each_threshold_is_judged_and_unmeasured_figures_fail() -> None:
    slos = parse_slos(["p99<5ms", "loss<1%", "throughput>100", "p50<1ms"])
    outcomes = check_slos(slos, {"p99": 4.2, "loss": 0.02, "throughput": 100.0, "p50": None})
    assert [outcome.passed for outcome in outcomes] == [True, False, False, False]
    assert outcomes[0].line() == "SLO p99<5ms: passed (measured 4.2 ms)"
    assert outcomes[1].line() == "SLO loss<1%: FAILED (measured 2%)"
    assert outcomes[2].line() == "SLO throughput>100: FAILED (measured 100/s)"
    assert outcomes[3].line() == "SLO p50<1ms: FAILED (not measured)"
    assert outcomes[1].as_dict() == {"slo": "loss<1%", "metric": "loss", "op": "<",
                                     "limit": 0.01, "measured": 0.02, "passed": False}
