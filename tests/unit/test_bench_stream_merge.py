"""Tier (a): the lines of ``--json-stream`` and the arithmetic of ``bench merge``,
with results built by hand (no sockets, clock driven by hand)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_load_stats import make_core, reply_to
from udpkit.bench.config import BenchConfig
from udpkit.bench.merge import MergeError, merge_results, result_from_document
from udpkit.bench.result import BenchResult
from udpkit.bench.stream import (
    INTERVAL,
    SUMMARY,
    IntervalStream,
    JsonLinesWriter,
    interval_record,
    summary_record,
)
from udpkit.core.load_stats import IntervalStats, LoadSummary

# ------------------------------------------------------------------------ stream


def test_streamed_intervals_are_the_summary_s_intervals_and_add_up() -> None:
    """What a live stream hands out as intervals close, then the rest at the end,
    is exactly the summary's time series, and its counts are the summary's."""
    core = make_core(timeout=0.5, duration=3.0)
    streamed: list[IntervalStats] = []
    now = 0.0
    for step in range(30):  # 0.1 s steps; every 4th request goes unanswered
        now = step * 0.1
        payloads = core.issue(4, now)
        core.receive([reply_to(p) for p in payloads[:3]], now + 0.05)
        core.expire(now + 0.05)
        streamed += core.intervals_closed(now + 0.05, len(streamed))
    core.expire(now + 1.0)
    summary = core.summary(now + 1.0)
    assert len(streamed) >= 2
    assert list(summary.intervals[: len(streamed)]) == streamed
    streamed += summary.intervals[len(streamed):]
    assert sum(item.sent for item in streamed) == summary.sent == 120
    assert sum(item.received for item in streamed) == summary.received == 90
    assert sum(item.lost for item in streamed) == summary.lost == 30


def test_interval_record_has_exact_percentiles_or_none() -> None:
    item = IntervalStats(start=0.5, sent=10, received=8, lost=2,
                         latency_us={100: 4, 200: 3, 900: 1})
    record = interval_record(item, index=1, width=0.5)
    assert record["type"] == INTERVAL
    assert (record["index"], record["start_s"], record["width_s"]) == (1, 0.5, 0.5)
    assert (record["sent"], record["received"], record["lost"]) == (10, 8, 2)
    assert record["loss"] == pytest.approx(0.2)
    assert record["throughput_rps"] == pytest.approx(16.0)
    # ranks of 8 replies: p50 the 4th (100), p90 the 7th (200), p99 the 8th (900)
    assert record["latency_us"] == {"p50": 100, "p90": 200, "p99": 900, "p99.9": 900,
                                    "max": 900}
    empty = interval_record(IntervalStats(1.0, 5, 0, 0, {}), index=2, width=0.5)
    assert empty["latency_us"] is None
    assert empty["loss"] == 0.0


def test_writer_writes_one_flushed_json_object_per_line() -> None:
    out = io.StringIO()
    writer = JsonLinesWriter(out)
    stream = IntervalStream(writer, width=1.0)
    stream(IntervalStats(0.0, 3, 3, 0, {50: 3}))
    stream(IntervalStats(1.0, 2, 1, 1, {70: 1}))
    writer.write(summary_record({"sent": 5}))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["type"] for line in lines] == [INTERVAL, INTERVAL, SUMMARY]
    assert [line.get("index") for line in lines] == [0, 1, None]
    assert writer.lines == 3


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_writer_stops_quietly_when_its_reader_goes_away() -> None:
    seen: list[str] = []
    writer = JsonLinesWriter(_ClosedPipe(), on_closed=lambda: seen.append("closed"))
    writer.write({"type": INTERVAL})
    writer.write({"type": SUMMARY})
    assert writer.closed
    assert seen == ["closed"]
    assert writer.lines == 0


# ------------------------------------------------------------------------- merge

CONFIG = BenchConfig(host="127.0.0.1", port=9000, duration=2.0, warmup=0.0).check()


def run(latency: dict[int, int], *, lost: int = 0, start: float = 1_000.0,
        duration: float = 2.0, config: BenchConfig = CONFIG) -> BenchResult:
    received = sum(latency.values())
    summary = LoadSummary(sent=received + lost, received=received, lost=lost,
                          duplicates=1, duration=duration, latency_us=latency,
                          started_at=start)
    return BenchResult.build(config, summary)


A = {100: 500, 150: 300, 4_000: 10}
B = {90: 200, 2_000: 200, 12_345: 1}


def test_merge_sums_counts_and_recomputes_percentiles_exactly() -> None:
    merged = merge_results([run(A, lost=5), run(B, lost=2, start=1_000.5)])
    union = {value: A.get(value, 0) + B.get(value, 0) for value in {*A, *B}}
    whole = run(union)  # one run that saw every reply of both
    assert (merged.sent, merged.received, merged.lost, merged.duplicates) == (
        1218, 1211, 7, 2)
    assert merged.percentiles_us == whole.percentiles_us
    assert merged.percentiles_us["max"] == 12_345
    assert merged.mean_us == pytest.approx(whole.mean_us)
    assert merged.summary.started_at == 1_000.0
    assert merged.duration == pytest.approx(2.5)  # first start to last end
    assert merged.config.concurrency == 2 * CONFIG.concurrency
    assert merged.processes == 2


def test_a_merged_result_survives_its_json_and_merges_again() -> None:
    merged = merge_results([run(A), run(B, start=1_001.0)])
    again = result_from_document(json.loads(json.dumps(merged.as_dict())))
    assert again.percentiles_us == merged.percentiles_us
    assert (again.sent, again.received, again.duration) == (
        merged.sent, merged.received, merged.duration)
    third = merge_results([again, run({300: 5}, start=1_000.2)])
    assert third.received == merged.received + 5


def test_runs_bounded_by_requests_merge() -> None:
    """Regression: a run of ``--requests`` (no ``--duration``) was refused, its
    ``duration_s`` setting being ``null``."""
    config = BenchConfig(host="127.0.0.1", port=9000, requests=810, warmup=0.0).check()
    docs = [json.loads(json.dumps(run(latency, config=config, start=start).as_dict()))
            for latency, start in ((A, 1_000.0), (B, 1_000.5))]
    merged = merge_results([result_from_document(doc) for doc in docs])
    assert merged.config.requests == 1620
    assert merged.received == 810 + 401


@pytest.mark.parametrize(("other", "needle"), [
    (replace(CONFIG, port=9001), "differ in target (127.0.0.1:9001 over udp vs"),
    (replace(CONFIG, transport="tcp"), "differ in target"),
    (replace(CONFIG, rate=1000.0), "differ in mode"),
    (replace(CONFIG, expect="echo"), "differ in reply rule"),
    (replace(CONFIG, timeout=2.0), "differ in timeout"),
    (replace(CONFIG, size=100), "differ in payload"),
])
def test_runs_of_other_settings_are_refused(other: BenchConfig, needle: str) -> None:
    with pytest.raises(MergeError, match="would mean nothing") as caught:
        merge_results([run(A), run(B, config=other)], ["a.json", "b.json"])
    assert needle in str(caught.value)
    assert str(caught.value).startswith("b.json and a.json")


def test_runs_that_never_ran_together_are_refused() -> None:
    with pytest.raises(MergeError, match="never ran at the same time") as caught:
        merge_results([run(A, start=1_000.0), run(B, start=1_002.5)], ["a", "b"])
    assert "b started at 1970-01-01 00:16:42.500 UTC, after a had ended" in str(caught.value)
    # touching at one instant is not running together either
    with pytest.raises(MergeError):
        merge_results([run(A, start=1_000.0), run(B, start=1_002.0)])


def test_times_beyond_the_calendar_are_still_one_line() -> None:
    """A hostile ``started_at`` (year 10000 and more) cannot crash the message."""
    with pytest.raises(MergeError, match=r"b started at Unix time 1e\+300, after"):
        merge_results([run(A, start=1_000.0), run(B, start=1e300)], ["a", "b"])


def test_the_same_run_twice_is_refused() -> None:
    with pytest.raises(MergeError, match="hold the same run"):
        merge_results([run(A), run(A)], ["a.json", "copy.json"])


def document() -> dict[str, Any]:
    return json.loads(json.dumps(run(A).as_dict()))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "needle"), [
    ({"schema": "udpkit.bench/99"}, "unknown result schema"),
    ({"histogram": {"lowest_us": 1, "highest_us": 60_000_000, "significant_digits": 2}},
     "histogram settings"),
    ({"started_at": None}, "no 'started_at'"),
    ({"sent": -1}, "'sent' is negative"),
    ({"sent": "many"}, "'sent' is not a whole number"),
    ({"received": True}, "'received' is not a whole number"),
    ({"duration_s": float("inf")}, "not a finite number"),
    ({"hdr_histogram": "not base64 at all!"}, "does not decode"),
    ({"received": 3}, "latencies for 3 replies"),
    ({"target": []}, "'target' is not a JSON object"),
    ({"mode": "sideways"}, "unknown transport"),
    ({"config": {"concurrency": 1}}, "config: no "),
])
def test_a_malformed_result_is_one_line_naming_the_file(
    change: dict[str, Any], needle: str
) -> None:
    doc = {**document(), **change}
    with pytest.raises(MergeError) as caught:
        result_from_document(doc, source="x.json")
    message = str(caught.value)
    assert message.startswith("x.json")
    assert needle in message
    assert "\n" not in message


REQUIRED = ("schema", "histogram", "target", "config", "mode", "sent", "received", "lost",
            "duplicates", "late", "wrong", "reordered", "started_at", "duration_s",
            "late_sends", "max_send_lag_s", "interrupted", "latency_us", "hdr_histogram")


@pytest.mark.parametrize("key", REQUIRED)
def test_any_missing_key_is_one_error_naming_the_file(key: str) -> None:
    partial = {k: v for k, v in document().items() if k != key}
    with pytest.raises(MergeError, match=r"^x\.json: ") as caught:
        result_from_document(partial, source="x.json")
    assert key in str(caught.value) or key == "schema"


def test_a_document_without_schema_or_not_an_object_is_refused() -> None:
    doc = document()
    with pytest.raises(MergeError, match="no 'schema' field"):
        result_from_document({k: v for k, v in doc.items() if k != "schema"})
    with pytest.raises(MergeError, match="not a JSON object"):
        result_from_document([1, 2], source="x.json")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
VALID = document()


def assert_reads_or_one_merge_error(valid: dict[str, Any], key: str, inner: str,
                                     value: object) -> None:
    """``valid`` with ``value`` put at ``key`` (or inside it, at ``inner``) reads as a
    result with ``valid``'s count, or fails as one MergeError naming the file."""
    doc = json.loads(json.dumps(valid))
    if inner and isinstance(doc[key], dict):
        doc[key][inner] = value
    else:
        doc[key] = value
    outcome: BenchResult | MergeError
    try:
        outcome = result_from_document(doc, source="x.json")
    except MergeError as exc:
        outcome = exc
    if isinstance(outcome, MergeError):
        assert str(outcome).startswith("x.json")
    else:
        assert outcome.received == valid["received"]


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(VALID)), inner=st.sampled_from(["", "host", "port",
       "concurrency", "rate", "duration_s", "template", "expect", "max", "lowest_us"]),
       value=JSON_VALUES)
def test_any_value_anywhere_reads_or_is_one_merge_error(key: str, inner: str,
                                                        value: object) -> None:
    """A result file is untrusted: whatever a field holds, reading it gives a result
    or a MergeError, never another exception."""
    assert_reads_or_one_merge_error(VALID, key, inner, value)


# ------------------------------------------------------------ open loop: the lags

OPEN = BenchConfig(host="127.0.0.1", port=9000, duration=2.0, warmup=0.0, rate=1000.0,
                   interval=0.5).check()


def open_run(latency: dict[int, int], send_lag: dict[int, int], read_lag: dict[int, int],
             *, start: float = 1_000.0, paced_by: str = "c") -> BenchResult:
    received = sum(latency.values())
    summary = LoadSummary(
        sent=received + 3, received=received, lost=3, duration=2.0, latency_us=latency,
        started_at=start, send_lag_us=send_lag, receive_lag_us=read_lag,
        paced_by=paced_by, late_sends=1, max_send_lag=0.0031,
        intervals=(IntervalStats(0.0, received + 3, received, 3, latency),))
    return BenchResult.build(OPEN, summary)


LAG_A = {2: 700, 5: 100, 3_100: 1}
LAG_B = {1: 300, 40: 98, 3_000: 9}


def test_merge_adds_the_send_and_read_lag_histograms_and_flags_from_the_sum() -> None:
    """Regression: merge dropped ``send_lag_us``, ``receive_lag_us``, ``paced_by`` and
    ``generator_flagged`` (the merged run said nothing of the generator's error)."""
    a = open_run(A, LAG_A, {1: 810})
    b = open_run(B, LAG_B, {}, start=1_000.5, paced_by="python")
    merged = merge_results([a, b])
    union = {value: LAG_A.get(value, 0) + LAG_B.get(value, 0) for value in {*LAG_A, *LAG_B}}
    whole = open_run({**A, **B}, union, {1: 810})  # one run that saw every send
    assert merged.summary.send_lag_us == union
    assert merged.send_lag_us == whole.send_lag_us
    assert merged.send_lag_us["max"] == 3_100
    assert merged.receive_lag_us == {"p50": 1, "p90": 1, "p99": 1, "p99.9": 1, "max": 1}
    assert merged.summary.paced_by == "c+python"
    document = json.loads(json.dumps(merged.as_dict()))
    assert document["send_lag_us"]["count"] == sum(union.values())
    assert document["receive_lag_us"]["count"] == 810
    # the flag comes from the merged figures by the single run's rule: B alone is
    # flagged (lag p99 3,000 us > half its p50 of 2,000 us), A alone is not, nor the sum
    # (lag p99 40 us, latency p50 100 us)
    assert b.generator_flagged
    assert not a.generator_flagged
    assert merged.generator_flagged == whole.generator_flagged is False
    flagged = merge_results([open_run(B, LAG_B, {}), open_run(B, LAG_B, {}, start=1_000.1)])
    assert flagged.generator_flagged
    # and it all survives the JSON, as merge reads it back
    again = result_from_document(document)
    assert again.summary.send_lag_us == union
    assert again.summary.receive_lag_us == {1: 810}
    assert again.summary.paced_by == "c+python"


def test_merging_one_result_gives_back_every_field_but_the_time_series() -> None:
    """Walks every key (nested too) of a full open-loop ``--json`` result: a merge of
    that one run reads each field and writes it back unchanged (read and added up, or
    derived again), except the fields merge deliberately leaves out; and every key has
    a declared fate in :data:`udpkit.bench.merge.FIELDS` (a new field must get one)."""
    from udpkit.bench.merge import FIELDS, LEFT_OUT

    original = json.loads(json.dumps(open_run(A, LAG_A, {1: 810}).as_dict()))
    assert set(original) == set(FIELDS), "give each new result field a fate in FIELDS"
    merged = json.loads(json.dumps(
        merge_results([result_from_document(original)]).as_dict()))

    def walk(a: object, b: object, path: str) -> None:
        if path.split(".")[0] in FIELDS and FIELDS[path.split(".")[0]] == LEFT_OUT:
            return
        if isinstance(a, dict):
            assert isinstance(b, dict), path
            assert set(a) == set(b), path
            for key in a:
                walk(a[key], b[key], f"{path}.{key}" if path else key)
        else:
            assert a == b, f"{path}: {a!r} became {b!r}"

    walk(original, merged, "")
    assert original["intervals"]
    assert merged["intervals"] == []


@pytest.mark.parametrize(("lag", "needle"), [
    ({"count": 1, "histogram": {"x": 1}}, "is not whole microseconds"),
    ({"count": 1, "histogram": {"\u00b2": 1}}, "is not whole microseconds"),  # isdigit()
    ({"count": 1, "histogram": {"5": -1}}, "is not a whole number >= 0"),
    ({"count": 2, "histogram": {"5": 1}}, "'count' 2 is not the histogram's 1"),
    ({"count": 1}, "no 'histogram'"),
    ([1], "not a JSON object"),
])
def test_a_malformed_lag_histogram_is_one_line(lag: object, needle: str) -> None:
    doc = json.loads(json.dumps(open_run(A, LAG_A, {}).as_dict()))
    doc["send_lag_us"] = lag
    with pytest.raises(MergeError, match=r"^x\.json: send_lag_us") as caught:
        result_from_document(doc, source="x.json")
    assert needle in str(caught.value)


OPEN_VALID = json.loads(json.dumps(open_run(A, LAG_A, {1: 810}).as_dict()))


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["send_lag_us", "receive_lag_us", "paced_by"]),
       inner=st.sampled_from(["", "histogram", "count", "p99"]),
       value=JSON_VALUES | st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=3))
def test_any_lag_value_reads_or_is_one_merge_error(key: str, inner: str,
                                                   value: object) -> None:
    """The lag histograms of a result file are untrusted too."""
    assert_reads_or_one_merge_error(OPEN_VALID, key, inner, value)
