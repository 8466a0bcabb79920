"""Tier (a): the typed messages a ``serve --workers`` worker sends its supervisor.

Regression guard: the report used to be an untyped ``dict[str, Any]``; a
field renamed on one side only was read as missing (``.get`` with a default)
and the summary silently lost counters.
"""

from __future__ import annotations

import multiprocessing
import pickle

import pytest

from udpkit.core.counters import Counters, CounterSnapshot
from udpkit.server.supervisor.report import (
    Ready,
    ReportTotals,
    StartFailed,
    WorkerMessage,
    WorkerReport,
    receive_message,
    send_message,
)


def _counters(received: int, replied: int) -> CounterSnapshot:
    counters = Counters()
    counters.received = received
    counters.replied = replied
    return counters.snapshot()


REPORT = WorkerReport(
    udp=_counters(5, 4),
    tcp=_counters(3, 3),
    open_connections=2,
    latency_counts=(1, 0, 6),
    latency_total=0.25,
)


@pytest.mark.parametrize(
    "message", [Ready(pid=1234), StartFailed("cannot import 'x'"), REPORT,
                WorkerReport(udp=_counters(0, 0), tcp=_counters(0, 0), open_connections=0)],
)
def test_every_message_survives_the_pipe_unchanged(message: WorkerMessage) -> None:
    assert pickle.loads(pickle.dumps(message)) == message
    ours, theirs = multiprocessing.Pipe(duplex=True)
    with ours, theirs:
        send_message(theirs, message)
        received = receive_message(ours)
    assert received == message
    assert type(received) is type(message)


def test_anything_else_on_the_pipe_is_refused() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    with ours, theirs:
        theirs.send(("report", {"udp": {}}))  # the old untyped form
        with pytest.raises(TypeError, match="not a worker message: tuple"):
            receive_message(ours)


def test_sending_to_a_closed_pipe_is_not_an_error() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    ours.close()
    theirs.close()
    send_message(theirs, Ready(pid=1))  # the supervisor is gone: nothing to tell
    assert theirs.closed


def test_totals_add_counters_and_latency_of_every_report() -> None:
    totals = ReportTotals()
    totals.add(REPORT)
    retired = ReportTotals()
    retired.add(REPORT)
    totals.merge(retired)
    assert totals.snapshot("udp") == _counters(10, 8)
    assert totals.snapshot("tcp") == _counters(6, 6)
    assert totals.latency_counts == [2, 0, 12]
    assert totals.latency_total == 0.5


def test_totals_without_reports_are_zero_and_have_no_histogram() -> None:
    totals = ReportTotals()
    totals.add(WorkerReport(udp=_counters(1, 1), tcp=_counters(0, 0), open_connections=0))
    assert totals.snapshot("udp") == _counters(1, 1)
    assert totals.latency_counts is None
    assert ReportTotals().snapshot("tcp") == CounterSnapshot()


def test_totals_add_the_handlers_own_tallies_of_live_and_retired_workers() -> None:
    """Issue 17: ``serve dns --workers`` lost the app's tally (formerr, rrl_drop...)
    on its way to the supervisor's summary and ``/metrics``."""
    report = WorkerReport(udp=_counters(3, 2), tcp=_counters(0, 0), open_connections=0,
                          handler_outcomes=(("formerr", 2), ("rrl_drop", 1)))
    retired = ReportTotals()
    retired.add(report)
    totals = ReportTotals()
    totals.add(WorkerReport(udp=_counters(1, 1), tcp=_counters(0, 0), open_connections=0,
                            handler_outcomes=(("formerr", 1), ("refused", 4))))
    totals.merge(retired)
    assert totals.handler_outcomes == {"formerr": 3, "refused": 4, "rrl_drop": 1}
    assert pickle.loads(pickle.dumps(report)) == report
