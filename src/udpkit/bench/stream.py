"""``--json-stream``: results as JSON Lines while a run goes, for dashboards and CI logs.

Rule: the one definition of the stream's lines.  Every line is one JSON object
with a ``type``; a stream ends with exactly one ``summary`` line (the same
document ``--json`` prints, tagged).  ``udpkit bench`` writes an ``interval``
line as each interval of the measurement closes; ``udpkit ping`` writes a
``start`` line, one line per probe's outcome (``reply``, ``timeout``,
``refused``) or stray reply (``duplicate``, ``late``, ``wrong``).  The counts
of a bench stream's ``interval`` lines add up to its summary's; each line is
flushed when written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from udpkit.core.load_stats import IntervalStats, percentile_of_counts

SUMMARY = "summary"
"""The ``type`` of a stream's last line."""
INTERVAL = "interval"
"""The ``type`` of a bench stream's line per interval."""
PING_START = "start"
"""The ``type`` of a ping stream's first line."""

INTERVAL_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9),
)


def interval_record(item: IntervalStats, *, index: int, width: float) -> dict[str, Any]:
    """One interval of a bench run.  Percentiles are exact (the interval's own
    microsecond counts), ``None`` when no reply came in the interval."""
    latency: dict[str, int] | None = None
    if item.latency_us:
        latency = {name: percentile_of_counts(item.latency_us, percent)
                   for name, percent in INTERVAL_PERCENTILES}
        latency["max"] = max(item.latency_us)
    done = item.received + item.lost
    return {
        "type": INTERVAL,
        "index": index,
        "start_s": round(item.start, 6),
        "width_s": width,
        "sent": item.sent,
        "received": item.received,
        "lost": item.lost,
        "loss": item.lost / done if done else 0.0,
        "throughput_rps": item.received / width,
        "send_rate_rps": item.sent / width,
        "latency_us": latency,
    }


def summary_record(document: Mapping[str, Any]) -> dict[str, Any]:
    """The final line: ``document`` (what ``--json`` prints) tagged as the summary."""
    return {"type": SUMMARY, **document}


def event_record(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A line of any other ``type`` (ping's start and per-probe lines)."""
    return {"type": kind, **fields}


class JsonLinesWriter:
    """Writes one object per line and flushes it.  A reader that went away
    (``| head``) ends the writing quietly: :attr:`closed` says so, and the
    command exits as a tool killed by SIGPIPE once the run is over."""

    def __init__(self, out: IO[str], *, on_closed: Callable[[], None] | None = None) -> None:
        self._out = out
        self._on_closed = on_closed
        self.closed = False
        self.lines = 0

    def write(self, record: Mapping[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._out.write(json.dumps(record) + "\n")
            self._out.flush()
        except BrokenPipeError:
            self.closed = True
            if self._on_closed is not None:
                self._on_closed()
            return
        self.lines += 1


class IntervalStream:
    """The ``on_interval`` callback of a run that writes each interval as a line."""

    def __init__(self, writer: JsonLinesWriter, *, width: float) -> None:
        self._writer = writer
        self._width = width
        self._index = 0

    def __call__(self, item: IntervalStats) -> None:
        self._writer.write(interval_record(item, index=self._index, width=self._width))
        self._index += 1


class LiveIntervals:
    """``with LiveIntervals(closed, start, width, callback):`` around a run: hands each
    interval to ``callback`` just after it closes (``closed(now, since)`` gives the
    intervals that ended by ``now`` from number ``since`` on), then :meth:`finish` hands
    over the rest from the run's summary.  One owner for bench and replay alike."""

    def __init__(self, closed: Callable[[float, int], list[IntervalStats]], start: float,
                 width: float, callback: Callable[[IntervalStats], None] | None) -> None:
        self._closed = closed
        self._start = start
        self._width = width
        self._callback = callback
        self._task: asyncio.Task[None] | None = None
        self.streamed = 0

    async def _pump(self, callback: Callable[[IntervalStats], None]) -> None:
        loop = asyncio.get_running_loop()
        while True:  # wake just after each interval's end, hand over what closed
            boundary = self._start + (self.streamed + 1) * self._width
            await asyncio.sleep(max(0.0, boundary - loop.time()) + 0.001)
            for item in self._closed(loop.time(), self.streamed):
                self.streamed += 1
                callback(item)

    def __enter__(self) -> LiveIntervals:
        if self._callback is not None:
            self._task = asyncio.get_running_loop().create_task(self._pump(self._callback))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def finish(self, intervals: Sequence[IntervalStats]) -> None:
        """Hand over the intervals of the summary not streamed yet."""
        if self._callback is not None:
            for item in intervals[self.streamed:]:
                self._callback(item)
