"""Tier (a): rate limiting, source keys, access lists, log limiting, histograms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.core.addresses import parse_host_port
from udpkit.core.admission import Admission
from udpkit.core.errors import UsageError
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.loglimit import LogLimiter
from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier, parse_networks


def test_bucket_allows_the_burst_then_the_rate() -> None:
    """Regression: string keys hash differently per process and could share a slot;
    integer keys 1 and 2 land in slots 1 and 2 of 16 every time."""
    table = TokenBucketTable(rate=10, burst=5, size=16)
    assert [table.allow(1, 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert table.allow(1, 0.1)  # one token back after 0.1 s at 10/s
    assert not table.allow(1, 0.1)
    # From 0 to 0.999 s: the burst of 5, then 10/s for 0.999 s (9 whole tokens).
    passed = sum(table.allow(2, i / 1000) for i in range(1000))
    assert passed == 5 + 9


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=300))
def test_never_more_than_burst_plus_rate_times_elapsed(times: list[float]) -> None:
    table = TokenBucketTable(rate=20, burst=3, size=4)
    times.sort()
    passed = sum(table.allow("k", t) for t in times)
    if times:
        assert passed <= 3 + 20 * (times[-1] - times[0]) + 1e-9


def test_memory_is_fixed_and_new_sources_cannot_evict_an_abuser() -> None:
    table = TokenBucketTable(rate=1, burst=2, size=8)
    assert table.allow("abuser", 0.0)
    assert table.allow("abuser", 0.0)
    assert not table.allow("abuser", 0.0)
    for index in range(10_000):  # a spray of new sources
        table.allow(f"spoof{index}", 0.0)
    assert len(table._keys) == 8
    assert not table.allow("abuser", 0.0)  # still limited, never reset by eviction


def test_quiet_slot_is_taken_over_by_a_new_source() -> None:
    table = TokenBucketTable(rate=1, burst=1, size=1)
    assert table.allow("a", 0.0)
    assert not table.allow("b", 0.0)  # shares a's empty bucket
    assert table.allow("b", 5.0)  # a has been quiet: b takes the slot


@pytest.mark.parametrize("kwargs", [{"rate": 0, "burst": 1}, {"rate": 1, "burst": 0},
                                    {"rate": 1, "burst": 1, "size": 0}])
def test_bad_bucket_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        TokenBucketTable(**kwargs)  # type: ignore[arg-type]


def test_source_keys_group_by_prefix() -> None:
    classifier = SourceClassifier(ipv4_prefix=24, ipv6_prefix=64)
    assert classifier.classify("10.0.0.1")[0] == classifier.classify("10.0.0.200")[0]
    assert classifier.classify("10.0.0.1")[0] != classifier.classify("10.0.1.1")[0]
    assert classifier.classify("2001:db8::1")[0] == classifier.classify("2001:db8::ffff:1")[0]
    assert classifier.classify("2001:db8::1")[0] != classifier.classify("2001:db8:0:1::1")[0]
    # A dual-stack socket shows IPv4 peers mapped into IPv6: same key as plain IPv4.
    assert classifier.classify("::ffff:10.0.0.9")[0] == classifier.classify("10.0.0.1")[0]


def test_allow_deny_and_exempt() -> None:
    classifier = SourceClassifier(
        allow=parse_networks(["10.0.0.0/8"]),
        deny=parse_networks(["10.9.0.0/16"]),
        exempt=parse_networks(["loopback"]),
    )
    assert classifier.classify("10.1.2.3")[1] is True
    assert classifier.classify("10.9.2.3")[1] is False
    assert classifier.classify("192.0.2.1")[1] is False
    assert classifier.classify("127.0.0.1")[2] is True
    assert classifier.classify("::1")[2] is True


def test_classifier_cache_is_bounded() -> None:
    classifier = SourceClassifier(cache_size=10)
    for index in range(100):
        classifier.classify(f"10.0.0.{index}")
    assert len(classifier._cache) == 10


def test_parse_networks_errors_and_lists() -> None:
    assert len(parse_networks(["10.0.0.0/8,192.0.2.0/24", " "])) == 2
    with pytest.raises(UsageError, match="bad network"):
        parse_networks(["10.0.0.0/33"])


def test_admission_order_deny_then_rate() -> None:
    classifier = SourceClassifier(deny=parse_networks(["192.0.2.0/24"]),
                                  exempt=parse_networks(["loopback"]))
    admission = Admission(classifier, TokenBucketTable(rate=1, burst=1, size=4))
    assert admission.check("192.0.2.7", 0.0) == "denied"
    assert admission.check("198.51.100.1", 0.0) is None
    assert admission.check("198.51.100.1", 0.0) == "rate_limited"
    assert all(admission.check("127.0.0.1", 0.0) is None for _ in range(100))


def test_log_limiter_reports_what_it_suppressed() -> None:
    limiter = LogLimiter(per_second=1, burst=2)
    assert [limiter.admit("flood", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.admit("other", 0.0) == 0  # per reason
    assert limiter.admit("flood", 1.0) == 3


def test_latency_histogram_buckets() -> None:
    histogram = LatencyHistogram(bounds=(0.001, 0.01))
    for value in (0.0005, 0.001, 0.005, 0.5):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.001, 2), (0.01, 3), (float("inf"), 4)]
    assert histogram.total == pytest.approx(0.5065)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9999", ("127.0.0.1", 9999)), ("[::1]:53", ("::1", 53)),
     ("localhost:0", ("localhost", 0)), (":80", ("127.0.0.1", 80))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["9999", "::1:53", "host:port", "h:70000", "[::1]53"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_host_port(text)


def test_parse_host_port_zero_can_be_refused() -> None:
    with pytest.raises(UsageError, match=r"1\.\.65535"):
        parse_host_port("h:0", allow_zero=False)



def test_take_grants_whole_tokens_within_the_same_bound() -> None:
    table = TokenBucketTable(rate=10, burst=5, size=16)
    assert table.take(1, 0.0, 16) == 5  # the burst, at once
    assert table.take(1, 0.0, 16) == 0
    assert table.take(1, 0.25, 16) == 2  # 2.5 tokens refilled: 2 whole ones
    assert table.take(1, 0.35, 16) == 1  # the half left plus 1.0 more: 1.5
    assert table.take(1, 0.35, 1) == 0


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=10, allow_nan=False),
                          st.integers(min_value=1, max_value=32)), max_size=200))
def test_take_never_grants_more_than_burst_plus_rate_times_elapsed(
    asks: list[tuple[float, int]]
) -> None:
    table = TokenBucketTable(rate=20, burst=3, size=4)
    asks.sort()
    granted = sum(table.take(7, when, want) for when, want in asks)
    if asks:
        assert granted <= 3 + 20 * (asks[-1][0] - asks[0][0]) + 1e-9


def test_admission_take() -> None:
    classifier = SourceClassifier(deny=parse_networks(["192.0.2.0/24"]),
                                  exempt=parse_networks(["loopback"]))
    admission = Admission(classifier, TokenBucketTable(rate=1, burst=3, size=4))
    assert admission.take("192.0.2.7", 0.0, 16) == 0
    assert admission.take("127.0.0.1", 0.0, 16) == 16
    assert admission.take("198.51.100.1", 0.0, 16) == 3
    assert admission.take("198.51.100.1", 0.0, 16) == 0


def test_an_ipv4_mapped_network_matches_the_ipv4_peer_it_names() -> None:
    """Regression (issue 16, item 10): ``--deny ::ffff:127.0.0.5`` had no effect on
    ``--host ::``: peers were unmapped to IPv4, configured networks were not."""
    classifier = SourceClassifier(deny=parse_networks(["::ffff:127.0.0.5", "::ffff:10.0.0.0/104"]))
    assert classifier.classify("::ffff:127.0.0.5")[1] is False
    assert classifier.classify("127.0.0.5")[1] is False
    assert classifier.classify("10.1.2.3")[1] is False
    assert classifier.classify("127.0.0.6")[1] is True
    everyone = SourceClassifier(deny=parse_networks(["::/0"]))
    assert everyone.classify("192.0.2.1")[1] is False  # ::/0 holds every mapped IPv4 peer
    assert parse_networks(["::ffff:127.0.0.5"]) == parse_networks(["127.0.0.5"])


def test_nat64_clients_are_keyed_by_their_ipv4_address() -> None:
    """Regression (issue 16, item 15): every NAT64 client shared one /64 bucket."""
    classifier = SourceClassifier()
    a, b = classifier.classify("64:ff9b::192.0.2.1"), classifier.classify("64:ff9b::192.0.2.2")
    assert a[0] != b[0]
    assert a[0] == classifier.classify("192.0.2.1")[0]
    assert classifier.classify("64:ff9b:1::c000:201")[0] == a[0]  # the local-use prefix
    denied = SourceClassifier(deny=parse_networks(["192.0.2.1"]))
    assert denied.classify("64:ff9b::192.0.2.1")[1] is False  # the embedded client is denied
    whole = SourceClassifier(deny=parse_networks(["64:ff9b::/96"]))
    assert whole.classify("64:ff9b::192.0.2.1")[1] is False  # and so is the whole prefix
    assert whole.classify("192.0.2.1")[1] is True


def test_link_local_neighbours_each_get_a_bucket() -> None:
    """Regression (issue 16, item 15): every link-local peer shared ``fe80::/64``."""
    classifier = SourceClassifier()
    keys = {classifier.classify(host)[0]
            for host in ("fe80::1%eth0", "fe80::2%eth0", "fe80::1%eth1")}
    assert len(keys) == 3
    assert classifier.classify("2001:db8::1")[0] == classifier.classify("2001:db8::2")[0]


def test_logs_show_a_mapped_peer_as_ipv4() -> None:
    from udpkit.core.handler import Peer, format_address

    assert format_address(("::ffff:127.0.0.1", 5)) == "127.0.0.1:5"
    assert str(Peer(("::ffff:10.0.0.1", 7, 0, 0), "udp")) == "10.0.0.1:7"
    assert format_address(("::1", 5)) == "[::1]:5"


def test_handler_error_lines_report_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The line after a suppressed spell says how many handler errors it hid."""
    from udpkit.core.handler import Peer
    from udpkit.server import dispatch, logs

    clock = iter([0.0] * 8 + [2.0])
    monkeypatch.setattr(logs, "handler_error_limiter", LogLimiter(per_second=1, burst=5))
    monkeypatch.setattr(dispatch, "_clock", lambda: next(clock))
    peer = Peer(("192.0.2.1", 5), "udp")
    for _ in range(9):
        dispatch.log_handler_error(peer, dispatch.HandlerError("bad reply"))
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["bad reply"] * 5 + ["bad reply (3 more handler errors not logged)"]


@pytest.mark.parametrize("port", ["²", "١٢", "9999²"])
def test_a_port_is_ascii_digits_only(port: str) -> None:
    """The class of issue 16, item 8 on the command line: ``²`` passed ``isdigit`` and
    then failed ``int`` (no clean message), Arabic-Indic digits were quietly taken."""
    with pytest.raises(UsageError, match="port must be a number"):
        parse_host_port(f"127.0.0.1:{port}")
