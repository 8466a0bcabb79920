"""Where a bench run's result goes as JSON: ``--json`` (one document at the end) or
``--json-stream`` (an ``interval`` line as each interval closes, then the ``summary``
line), for ``bench`` and ``bench --replay`` alike.

Rule: a reader that goes away (``| head``) stops the run as Ctrl-C would, and the
command then ends on the one quiet path, :class:`BrokenPipeError` (exit 141).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from udpkit.bench.stream import IntervalStream, JsonLinesWriter, summary_record
from udpkit.core.load_stats import IntervalStats


class JsonResult:
    """``--json`` / ``--json-stream`` of one run; ``wanted``: either was asked for."""

    def __init__(self, *, as_json: bool, as_stream: bool, width: float | None) -> None:
        self.wanted = as_json or as_stream
        self._writer: JsonLinesWriter | None = None
        self.on_interval: Callable[[IntervalStats], None] | None = None
        """What the run hands each closed interval to (``None`` without a stream)."""
        if as_stream:
            assert width is not None
            self._writer = JsonLinesWriter(
                sys.stdout, on_closed=lambda: signal.raise_signal(signal.SIGINT))
            self.on_interval = IntervalStream(self._writer, width=width)

    def check_reader(self) -> None:
        """After the run: the stream's reader went away, so nothing more is printed."""
        if self._writer is not None and self._writer.closed:
            raise BrokenPipeError  # the one path: quiet, exit 141

    def emit(self, document: dict[str, Any]) -> None:
        """The run's document: the last line of the stream, or the ``--json`` line."""
        if self._writer is None:
            print(json.dumps(document), flush=True)
            return
        self._writer.write(summary_record(document))
        self.check_reader()
