"""Handlers that misbehave must not take the server, or its log, down with them.

In-process servers on loopback, bounded in count and time.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.net.helpers import RawUdp, wait_for_counters
from udpkit.core.handler import Peer
from udpkit.server import Server, ServerConfig

HOST = "127.0.0.1"


def always_raises(request: bytes, peer: Peer) -> bytes:
    raise RuntimeError("broken handler")


@pytest.mark.usefixtures("udp_path")
async def test_handler_tracebacks_are_rate_limited_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 16, item 6): a handler that always raised logged a traceback
    per request, 6.4 MB of log in 5 s; abuse lines were limited, handler errors not."""
    caplog.set_level(logging.ERROR, logger="udpkit")
    started = time.monotonic()
    async with Server(ServerConfig(port=0, app=always_raises)) as server:
        raw = RawUdp(HOST)
        try:
            for batch in range(10):  # paced, so the kernel's queue never overflows
                for index in range(30):
                    raw.sock.sendto(b"r%d" % index, (HOST, server.port))
                stats = await wait_for_counters(server, "udp", 30 * (batch + 1))
        finally:
            raw.close()
    elapsed = time.monotonic() - started
    assert stats.handler_errors == 300
    logged = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(logged) <= 5 + elapsed + 1  # the burst, then about one a second
    assert sum(r.exc_info is not None for r in logged) == len(logged)
