"""``udpkit bench merge``: one result out of runs of several generators or hosts.

Rule: a merge adds up only what adds up.  Counts are summed, the HdrHistograms
added (the percentiles of the merged histogram are the exact percentiles of
all replies, to the histogram's 3 significant digits), the max is the largest
max.  Runs whose sum would mean nothing are refused with one line saying why
(:class:`MergeError`, exit 2): another target, transport, mode, reply rule,
payload or timeout; no moment when all of them ran; other histogram settings;
a result schema this udpkit does not know; the same run twice.  A result file
is untrusted input: anything malformed is one line naming the file.

The merged run lasts from the first start to the last end (so its throughput
is the replies of all over that span); it has no time series, as the runs'
intervals do not line up.  Open loop: the send-lag and arrival-to-read
histograms (exact, microsecond -> count) are added too, their percentiles and
the generator's flag (:func:`udpkit.core.pacing.generator_error`) recomputed
from the merged figures by :class:`BenchResult`, as for a single run.  A run
whose host gave no kernel timestamps has no arrival-to-read histogram: the
merged one holds the other runs' (its ``count`` says how many replies).

Every field of a result is either read and added up, or derived again from
what was added up, or deliberately left out (:data:`FIELDS` says which; a
unit test holds it to :meth:`BenchResult.as_dict`).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from udpkit.bench.config import BenchConfig
from udpkit.bench.result import (
    HISTOGRAM_SETTINGS,
    SCHEMA,
    BenchResult,
    decode_histogram,
    new_histogram,
)
from udpkit.core.errors import UsageError
from udpkit.core.load_stats import LoadSummary
from udpkit.core.pacing import merge_counts

PACED_BY_JOIN = "+"
"""Runs paced by different senders merge into ``paced_by`` ``"c+python"``."""


class MergeError(UsageError):
    """A result that cannot be read, or runs that cannot be added up (one line)."""


_COUNTS = ("sent", "received", "lost", "duplicates", "late", "wrong", "reordered")

READ = "read and added up"
DERIVED = "derived again from the merged figures"
LEFT_OUT = "left out of a merged run"

FIELDS: Mapping[str, str] = {
    "schema": READ, "started_at": READ, "target": READ, "mode": READ, "config": READ,
    "sent": READ, "received": READ, "lost": READ, "duplicates": READ, "late": READ,
    "wrong": READ, "reordered": READ, "duration_s": READ, "late_sends": READ,
    "max_send_lag_s": READ, "paced_by": READ, "send_lag_us": READ, "receive_lag_us": READ,
    "interrupted": READ, "interval_s": READ, "histogram": READ, "hdr_histogram": READ,
    "latency_us": READ,  # its exact max; the percentiles come from the merged histogram
    "udpkit_version": DERIVED,  # the merged result is this udpkit's
    "loss": DERIVED, "throughput_rps": DERIVED, "send_rate_rps": DERIVED,
    "latency_mean_us": DERIVED, "latency_from": DERIVED, "fell_behind": DERIVED,
    "generator_flagged": DERIVED, "generator_flag_fraction": DERIVED,
    "intervals": LEFT_OUT,  # the runs' intervals do not line up: no time series
}
"""What ``bench merge`` does with each top-level field of a ``--json`` result."""


def load_result(path: str) -> BenchResult:
    """Read a ``udpkit bench --json`` file (or a ``--json-stream``'s summary line)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(64 << 20)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MergeError(f"{path}: cannot read: {reason}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:  # a --json-stream: its last line is the summary
        text = lines[-1]
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise MergeError(f"{path}: not JSON ({message})") from None
    return result_from_document(document, source=path)


def result_from_document(document: object, *, source: str = "result") -> BenchResult:
    """A :class:`BenchResult` from what :meth:`BenchResult.as_dict` wrote (untrusted)."""
    reader = _Reader(document, source)
    schema = reader.get("schema", str, "no 'schema' field: written by an older udpkit?")
    if schema != SCHEMA:
        raise MergeError(f"{source}: unknown result schema {schema!r} (this udpkit reads "
                         f"{SCHEMA!r})")
    settings = reader.get("histogram", dict)
    if settings != dict(HISTOGRAM_SETTINGS):
        raise MergeError(f"{source}: histogram settings {json.dumps(settings)} differ from "
                         f"{json.dumps(dict(HISTOGRAM_SETTINGS))}: cannot add up exactly")
    target = _Reader(reader.get("target", dict), f"{source}: target")
    config = _Reader(reader.get("config", dict), f"{source}: config")
    mode = reader.get("mode", str)
    transport = target.get("transport", str)
    if transport not in ("udp", "tcp") or mode not in ("open", "closed"):
        raise MergeError(f"{source}: unknown transport {transport!r} or mode {mode!r}")
    rate = config.number("rate", optional=True)
    if (mode == "open") != (rate is not None):
        raise MergeError(f"{source}: mode {mode!r} does not match rate {rate!r}")
    try:
        bench_config = BenchConfig(
            host=target.get("host", str), port=target.integer("port"), transport=transport,
            concurrency=config.integer("concurrency"), rate=rate,
            poisson=config.get("poisson", bool),
            duration=config.number("duration_s", optional=True),
            requests=config.integer("requests", optional=True),
            warmup=config.number("warmup_s"), timeout=config.number("timeout_s"),
            template=config.get("template", str), size=config.integer("size"),
            expect=config.get("expect", str), connections=config.integer("connections"),
            depth=config.integer("depth", optional=True),
            interval=reader.number("interval_s", optional=True),
        ).check()
    except MergeError:
        raise
    except UsageError as exc:
        raise MergeError(f"{source}: {exc}") from None
    counts = {name: reader.integer(name) for name in _COUNTS}
    started_at = reader.number("started_at", optional=True)
    if started_at is None:
        raise MergeError(f"{source}: no 'started_at': a result without a start time "
                         "cannot be placed beside others")
    summary = LoadSummary(
        **counts,
        duration=reader.number("duration_s"),
        late_sends=reader.integer("late_sends"),
        max_send_lag=reader.number("max_send_lag_s"),
        interrupted=reader.get("interrupted", bool),
        started_at=started_at,
        send_lag_us=_lag_counts(reader, "send_lag_us", source),
        receive_lag_us=_lag_counts(reader, "receive_lag_us", source),
        paced_by=_paced_by(reader),
    )
    latency = _Reader(reader.get("latency_us", dict), f"{source}: latency_us")
    exact_max = latency.integer("max")
    encoded = reader.get("hdr_histogram", str)
    try:
        histogram = decode_histogram(encoded)
    except Exception:  # hdrh raises a zoo of types on bad input: all are one line here
        raise MergeError(f"{source}: the hdr_histogram does not decode") from None
    if histogram.get_total_count() != summary.received:
        raise MergeError(f"{source}: the histogram holds {histogram.get_total_count()} "
                         f"latencies for {summary.received} replies")
    processes = config.integer("procs")
    return BenchResult.from_histogram(bench_config, summary, histogram, exact_max,
                                      processes=max(1, processes))


def merge_results(results: Sequence[BenchResult],
                  sources: Sequence[str] | None = None) -> BenchResult:
    """Add up runs that loaded the same service side by side; see the module's rule.

    ``sources`` names each result in error messages (file names by default
    ``result 1``, ``result 2``...)."""
    if not results:
        raise MergeError("nothing to merge: give one result or more")
    names = list(sources) if sources is not None else [
        f"result {index + 1}" for index in range(len(results))]
    if len(names) != len(results):
        raise MergeError("give one source name per result")
    first, first_name = results[0], names[0]
    for result, name in zip(results[1:], names[1:], strict=True):
        why = _differs(first.config, result.config)
        if why:
            raise MergeError(f"{name} and {first_name} differ in {why}: their sum "
                             "would mean nothing")
    _check_same_time(results, names)
    _check_distinct(results, names)
    histogram = new_histogram()
    for result in results:
        histogram.add(result.hdr_histogram())
    starts = [_started(result, name) for result, name in zip(results, names, strict=True)]
    start = min(starts)
    end = max(begin + result.duration for begin, result in zip(starts, results, strict=True))
    summaries = [result.summary for result in results]
    summary = LoadSummary(
        **{name: sum(getattr(s, name) for s in summaries) for name in _COUNTS},
        duration=end - start,
        late_sends=sum(s.late_sends for s in summaries),
        max_send_lag=max(s.max_send_lag for s in summaries),
        interrupted=any(s.interrupted for s in summaries),
        started_at=start,
        send_lag_us=merge_counts([s.send_lag_us for s in summaries]),
        receive_lag_us=merge_counts([s.receive_lag_us for s in summaries]),
        paced_by=PACED_BY_JOIN.join(sorted({s.paced_by for s in summaries} - {""})),
    )
    configs = [result.config for result in results]
    rate = sum(c.rate for c in configs if c.rate is not None) if first.config.rate else None
    requests = (sum(c.requests for c in configs if c.requests is not None)
                if all(c.requests is not None for c in configs) else None)
    config = replace(
        first.config,
        concurrency=sum(c.concurrency for c in configs),
        rate=rate,
        connections=sum(c.connections for c in configs),
        duration=max(end - start, 1e-9),
        requests=requests,
        warmup=max(c.warmup for c in configs),
    )
    exact_max = max(result.percentiles_us.get("max", 0) for result in results)
    return BenchResult.from_histogram(config, summary, histogram, exact_max,
                                      processes=sum(result.processes for result in results))


def _lag_counts(reader: _Reader, key: str, source: str) -> dict[int, int]:
    """A lag histogram (``send_lag_us``/``receive_lag_us``: ``null`` or percentiles,
    ``count`` and ``histogram``), as microseconds -> count; its percentiles are derived
    again from the histogram, so only the histogram and its count are read."""
    value = reader.optional(key)
    if value is None:
        return {}
    lag = _Reader(value, f"{source}: {key}")
    table = lag.get("histogram", dict)
    counts: dict[int, int] = {}
    for micros, count in table.items():
        if not (micros.isascii() and micros.isdigit()) or len(micros) > 12:
            raise MergeError(f"{source}: {key}: histogram value {micros[:20]!r} is not "
                             "whole microseconds")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise MergeError(f"{source}: {key}: histogram count of {micros} is not a "
                             "whole number >= 0")
        counts[int(micros)] = counts.get(int(micros), 0) + count
    total = lag.integer("count")
    if total != sum(counts.values()):
        raise MergeError(f"{source}: {key}: 'count' {total} is not the histogram's "
                         f"{sum(counts.values())}")
    return {micros: count for micros, count in counts.items() if count}


def _paced_by(reader: _Reader) -> str:
    value = reader.optional("paced_by")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 40:
        raise MergeError(f"{reader.source}: 'paced_by' is not a short string")
    return value


def merge_files(paths: Sequence[str]) -> BenchResult:
    """``udpkit bench merge PATH...`` as a function: read, check, add up."""
    return merge_results([load_result(path) for path in paths], list(paths))


# ----------------------------------------------------------------------------- checks


def _differs(a: BenchConfig, b: BenchConfig) -> str:
    """The first setting that makes two runs' sum meaningless, or ``""``."""
    from udpkit.core.handler import format_address

    if (a.host, a.port, a.transport) != (b.host, b.port, b.transport):
        return (f"target ({format_address((b.host, b.port))} over {b.transport} vs "
                f"{format_address((a.host, a.port))} over {a.transport})")
    if (a.rate is None) != (b.rate is None):
        return "mode (open loop vs closed loop)"
    if a.expect != b.expect:
        return f"reply rule, i.e. app (--expect {b.expect!r} vs {a.expect!r})"
    if (a.template, a.size) != (b.template, b.size):
        return "payload (--payload/--size)"
    if a.timeout != b.timeout:
        return f"timeout ({b.timeout:g} s vs {a.timeout:g} s: 'lost' means another thing)"
    return ""


def _started(result: BenchResult, name: str) -> float:
    started = result.summary.started_at
    if started is None:
        raise MergeError(f"{name}: no start time: cannot be placed beside other runs")
    return started


def _clock(seconds: float) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):  # a file's claim beyond the calendar
        return f"Unix time {seconds:.6g}"
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _check_same_time(results: Sequence[BenchResult], names: Sequence[str]) -> None:
    """Every run must overlap every other (in one dimension: all share a moment)."""
    spans = [(_started(result, name), _started(result, name) + result.duration, name)
             for result, name in zip(results, names, strict=True)]
    latest = max(spans, key=lambda span: span[0])
    earliest_end = min(spans, key=lambda span: span[1])
    if len(spans) > 1 and latest[0] >= earliest_end[1]:
        raise MergeError(
            f"{latest[2]} started at {_clock(latest[0])}, after {earliest_end[2]} had ended "
            f"({_clock(earliest_end[1])}): runs that never ran at the same time do not add up")


def _check_distinct(results: Sequence[BenchResult], names: Sequence[str]) -> None:
    seen: dict[tuple[object, ...], str] = {}
    for result, name in zip(results, names, strict=True):
        key = (result.summary.started_at, result.sent, result.received, result.histogram)
        if key in seen:
            raise MergeError(f"{name} and {seen[key]} hold the same run: it would count twice")
        seen[key] = name


_TYPE_NAMES = {str: "string", int: "whole number", bool: "boolean", dict: "JSON object"}


class _Reader:
    """Typed access to one untrusted JSON object; every mistake is one MergeError line."""

    def __init__(self, value: object, source: str) -> None:
        if not isinstance(value, dict):
            raise MergeError(f"{source}: not a JSON object")
        self._value: Mapping[str, Any] = value
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    def optional(self, key: str) -> Any:
        """The value of ``key``; ``None`` if absent (a file of an older udpkit)."""
        return self._value.get(key)

    def get(self, key: str, kind: type | tuple[type, ...], missing: str = "") -> Any:
        if key not in self._value:
            raise MergeError(f"{self._source}: " + (missing or f"no {key!r}"))
        value = self._value[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            name = "number" if isinstance(kind, tuple) else _TYPE_NAMES.get(kind, kind.__name__)
            raise MergeError(f"{self._source}: {key!r} is not a {name}")
        return value

    def integer(self, key: str, *, optional: bool = False) -> Any:
        if optional and self._value.get(key) is None:
            return None
        value = self.get(key, int)
        if value < 0:
            raise MergeError(f"{self._source}: {key!r} is negative")
        return value

    def number(self, key: str, *, optional: bool = False) -> Any:
        if optional and self._value.get(key) is None:
            return None
        value = self.get(key, (int, float))
        if not math.isfinite(value) or value < 0:
            raise MergeError(f"{self._source}: {key!r} is not a finite number >= 0")
        return float(value)
