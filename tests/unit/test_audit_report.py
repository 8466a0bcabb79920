"""Tier (a): the audit's analysis from synthetic observations, exact figures, no sockets."""

from __future__ import annotations

import json
import math

import pytest

from udpkit.audit.config import AuditConfig, parse_rates, parse_sizes
from udpkit.audit.text import render_text
from udpkit.core.audit_report import (
    AuditObservations,
    ProbeObservation,
    RampObservation,
    analyse,
    format_factor,
    ramp_results,
    size_result,
)
from udpkit.core.errors import UsageError


def greeting_sizes(*sizes: int, probes: int = 3, limit: int = 1024) -> tuple[ProbeObservation, ...]:
    """What udpkit's greeting server answers: ``Hello, <name>!`` up to ``limit`` bytes."""
    return tuple(
        ProbeObservation(size=n, sent=probes, replies=probes, reply_bytes=probes * (n + 8),
                         largest_reply=n + 8)
        if 0 < n <= limit else ProbeObservation(size=n, sent=probes)
        for n in sizes
    )


def echo_sizes(*sizes: int, probes: int = 3) -> tuple[ProbeObservation, ...]:
    return tuple(ProbeObservation(size=n, sent=probes, replies=probes, reply_bytes=probes * n,
                                  largest_reply=n) for n in sizes)


def test_greeting_amplifies_by_n_plus_8_over_n() -> None:
    report = analyse(AuditObservations(target="127.0.0.1:9999",
                                       sizes=greeting_sizes(0, 1, 2, 4, 8, 1024, 1472)))
    assert report.size(1).byte_factor == 9.0
    assert report.size(2).byte_factor == 5.0
    assert report.size(4).byte_factor == 3.0
    assert report.size(8).byte_factor == 2.0
    assert report.size(1024).byte_factor == 1032 / 1024
    assert report.size(1).packet_factor == 1.0
    assert report.size(0).byte_factor is None
    assert report.size(0).packet_factor == 0.0
    assert report.size(1472).byte_factor == 0.0
    assert not report.size(1472).answered
    # Wire factor: 28 header bytes on both sides, (n + 8 + 28) / (n + 28).
    assert report.size(1).wire_factor == 37 / 29
    assert (report.max_byte_factor, report.worst_size, report.max_packet_factor) == (9.0, 1, 1.0)
    assert [r.within_rfc9000 for r in report.sizes] == [True, False, False, True, True, True, True]
    assert [r.amplifies for r in report.sizes] == [False, True, True, True, True, True, False]
    assert report.verdict("RFC 8085").status == "amplifies"
    assert "up to 9.00x the bytes (1-byte requests)" in report.verdict("RFC 8085").detail
    rfc9000 = report.verdict("RFC 9000")
    assert rfc9000.status == "exceeds"
    assert rfc9000.detail == "above 3x for request sizes 1, 2 (worst 9.00x with 1-byte requests)"


def test_echo_is_factor_one_and_within_every_bound() -> None:
    report = analyse(AuditObservations(
        target="[::1]:7", header_bytes=48, sizes=echo_sizes(1, 64, 1500),
        empty=ProbeObservation(size=0, sent=2, replies=2, reply_bytes=0),
        oversize=echo_sizes(9000, 65507, probes=2),
    ))
    assert [r.byte_factor for r in report.sizes] == [1.0, 1.0, 1.0]
    assert [r.wire_factor for r in report.sizes] == [1.0, 1.0, 1.0]
    assert report.empty is not None
    assert (report.empty.byte_factor, report.empty.packet_factor) == (None, 1.0)
    assert report.empty.within_rfc9000 is True
    assert not report.empty.amplifies
    assert [r.byte_factor for r in report.oversize] == [1.0, 1.0]
    assert report.max_byte_factor == 1.0
    assert report.verdict("RFC 8085").status == "ok"
    assert report.verdict("RFC 9000").status == "ok"


def test_bytes_in_reply_to_an_empty_datagram_are_unbounded_amplification() -> None:
    """A memcached-like reply to nothing: infinite by bytes, finite on the wire."""
    report = analyse(AuditObservations(
        target="t", sizes=echo_sizes(8),
        empty=ProbeObservation(size=0, sent=1, replies=1, reply_bytes=100, largest_reply=100),
    ))
    assert report.empty is not None
    assert report.empty.byte_factor == math.inf
    assert report.empty.wire_factor == 128 / 28
    assert report.empty.within_rfc9000 is False
    assert (report.max_byte_factor, report.worst_size) == (math.inf, 0)
    assert report.verdict("RFC 9000").status == "exceeds"
    assert "(empty requests)" in report.verdict("RFC 8085").detail
    data = json.loads(json.dumps(report.to_dict()))
    assert data["empty"]["byte_factor"] == "inf"
    assert data["max_byte_factor"] == "inf"
    assert format_factor(math.inf) == "inf"


def test_two_datagrams_per_request_is_packet_amplification() -> None:
    sizes = (ProbeObservation(size=10, sent=4, replies=8, reply_bytes=40),)
    report = analyse(AuditObservations(target="t", sizes=sizes))
    result = report.size(10)
    assert (result.byte_factor, result.packet_factor) == (1.0, 2.0)
    assert result.amplifies
    assert result.within_rfc9000
    assert report.verdict("RFC 8085").status == "amplifies"
    assert "up to 2.00 datagrams per request" in report.verdict("RFC 8085").detail


def test_a_silent_service_reflects_nothing() -> None:
    report = analyse(AuditObservations(target="t", sizes=greeting_sizes(1, 2, limit=0)))
    assert report.max_byte_factor == 0.0
    assert report.verdict("RFC 8085").status == "ok"
    assert report.verdict("RFC 8085").detail == "no request was answered: nothing to reflect"
    assert report.verdict("RFC 9000").status == "ok"
    assert report.verdict("Rate limit").status == "unknown"


def test_unsent_requests_have_no_factor() -> None:
    result = size_result(ProbeObservation(size=65507, sent=0, send_error="EMSGSIZE"),
                         header_bytes=28)
    assert (result.byte_factor, result.packet_factor, result.wire_factor) == (None, None, None)
    assert result.within_rfc9000 is None
    assert not result.amplifies
    report = analyse(AuditObservations(target="t", oversize=(
        ProbeObservation(size=65507, sent=0, send_error="EMSGSIZE"),)))
    assert report.verdict("RFC 8085").status == "unknown"
    assert report.verdict("RFC 9000").status == "unknown"


def step(rate: float, sent: int, replies: int, duration: float = 0.5) -> RampObservation:
    return RampObservation(target_rate=rate, duration=duration, sent=sent, replies=replies)


def test_the_limit_is_the_first_step_below_the_threshold() -> None:
    steps = (step(100, 50, 50), step(1000, 500, 499), step(5000, 2500, 1000),
             step(20000, 10000, 1000))
    results, limit = ramp_results(steps)
    assert [r.answered_fraction for r in results] == [1.0, 0.998, 0.4, 0.1]
    assert [r.limited for r in results] == [False, False, True, True]
    assert [r.achieved_rate for r in results] == [100.0, 1000.0, 5000.0, 20000.0]
    assert (limit.status, limit.limit_rate, limit.last_full_rate) == ("limited", 5000, 1000)
    assert limit.answered_fraction == 0.4
    assert limit.highest_rate == 20000.0


def test_no_drop_means_no_limit_up_to_the_highest_rate_sent() -> None:
    _, limit = ramp_results((step(100, 50, 50), step(1000, 450, 450)))
    assert (limit.status, limit.limit_rate, limit.last_full_rate) == ("unlimited", None, 1000)
    assert limit.highest_rate == 900.0


def test_no_limit_says_how_many_requests_the_ramp_sent() -> None:
    """Regression: ``audit --quick`` said UNLIMITED without saying that its ramp
    sent fewer requests than a limiter's burst: the verdict names the total."""
    _, limit = ramp_results((step(100, 50, 50), step(1000, 450, 450)))
    assert limit.ramp_requests == 500
    report = analyse(AuditObservations(target="t", sizes=(), ramp_request_size=8,
                                       ramp=(step(100, 50, 50), step(1000, 450, 450))))
    verdict = next(v for v in report.verdicts if v.rule.startswith("Rate limit"))
    assert verdict.status == "unlimited"
    assert "(500 requests in all: a limit with a larger burst would not show)" in verdict.detail


def test_a_limit_below_the_first_step() -> None:
    _, limit = ramp_results((step(100, 50, 20), step(1000, 500, 20)))
    assert (limit.status, limit.limit_rate, limit.last_full_rate) == ("limited", 100, None)


def test_the_threshold_is_a_parameter() -> None:
    _, strict = ramp_results((step(100, 100, 95),), threshold=0.99)
    _, loose = ramp_results((step(100, 100, 95),), threshold=0.9)
    assert (strict.status, loose.status) == ("limited", "unlimited")


def test_two_replies_per_request_still_answer_in_full() -> None:
    """A service that sends two datagrams per request answers "in full" with two per request."""
    sizes = (ProbeObservation(size=8, sent=3, replies=6, reply_bytes=48),)
    report = analyse(AuditObservations(target="t", sizes=sizes, ramp_request_size=8,
                                       ramp=(step(100, 50, 100), step(1000, 500, 500))))
    assert [r.answered_fraction for r in report.ramp] == [1.0, 0.5]
    assert report.rate_limit.limit_rate == 1000


def test_loss_in_the_sweep_does_not_lower_the_bar() -> None:
    sizes = (ProbeObservation(size=8, sent=3, replies=2, reply_bytes=32),)
    report = analyse(AuditObservations(target="t", sizes=sizes, ramp_request_size=8,
                                       ramp=(step(100, 50, 40),)))
    assert report.ramp[0].answered_fraction == 0.8
    assert report.rate_limit.status == "limited"


def test_nothing_sent_in_any_step_is_unknown() -> None:
    results, limit = ramp_results((RampObservation(target_rate=100, duration=0.5, sent=0,
                                                   replies=0, not_sent=50),))
    assert results[0].answered_fraction is None
    assert limit.status == "unknown"


def test_the_text_report_names_figures_and_verdicts() -> None:
    report = analyse(AuditObservations(
        target="127.0.0.1:9999", sizes=greeting_sizes(0, 1, 1500),
        empty=ProbeObservation(size=0, sent=3), oversize=greeting_sizes(9000),
        ramp_request_size=8, ramp=(step(100, 50, 50), step(1000, 500, 100)),
        notes=("time budget spent",),
    ))
    text = render_text(report)
    assert "udpkit audit of 127.0.0.1:9999" in text
    assert "9.00x" in text
    assert "empty datagram           3 sent, no reply (dropped)" in text
    assert "oversized, 9000 bytes    3 sent, no reply (dropped)" in text
    assert "Rate ramp (one source, 8-byte requests)" in text
    assert "20.0%  limited" in text
    assert "RFC 9000 s8.1 (at most 3x the bytes received before validation): EXCEEDS" in text
    assert ("Rate limit (one source): LIMITED: kicks in between 100 and 1000 req/s "
            "(20.0% answered at 1000 req/s)") in text
    assert "Worst bandwidth amplification: 9.00x with 1-byte requests" in text
    assert text.endswith("  time budget spent")


def test_config_checks_and_parsers() -> None:
    assert parse_sizes("0, 1,8,") == (0, 1, 8)
    assert parse_rates("") == ()
    assert parse_rates("100,2e3") == (100.0, 2000.0)
    assert AuditConfig(timeout=0.3).check().drain == 0.3
    quick = AuditConfig.quick(port=7)
    assert (quick.port, quick.max_time, quick.probes) == (7, 5.0, 2)
    with pytest.raises(UsageError, match="comma-separated"):
        parse_sizes("a")
    with pytest.raises(UsageError, match=r"0\.\.65507"):
        AuditConfig(sizes=(70000,)).check()
    with pytest.raises(UsageError, match="rise"):
        AuditConfig(rates=(1000.0, 100.0)).check()
    with pytest.raises(UsageError, match="--probes"):
        AuditConfig(probes=0).check()
    with pytest.raises(UsageError, match="--timeout"):
        AuditConfig(timeout=math.nan).check()
    with pytest.raises(UsageError, match="port"):
        AuditConfig(port=0).check()
