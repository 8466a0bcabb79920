"""SIGHUP to a server run from a terminal: a graceful stop with its summary.

Regression (issue 16, item 12): SIGHUP's default action killed the process at once,
nothing drained and no summary (``--workers``: tests/cli/test_cli_workers.py).
"""

from __future__ import annotations

import signal

from tests.processes import parse_summary, run_udpkit, serve


def test_sighup_stops_the_server_gracefully_with_its_summary() -> None:
    with serve() as server:
        sent = run_udpkit("send", "--port", str(server.port), "Michael")
        assert sent.stdout == b"Hello, Michael!\n"
        code, log = server.stop(signal.SIGHUP)
    assert code == 0
    assert "Received SIGHUP, shutting down gracefully" in log
    assert parse_summary(log)["udp"]["replied"] == 1
