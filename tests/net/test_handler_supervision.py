"""Handlers that block: the loop watchdog names them, ``--handler-threads`` takes them off
the loop.  Real event loops; blocking is made with events, not measured with clocks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from udpkit.core.handler import Peer
from udpkit.server.handler_threads import ThreadedHandler
from udpkit.server.watchdog import LoopWatchdog, blocking_frame


def a_handler_that_sleeps(seconds: float) -> None:
    time.sleep(seconds)


async def test_the_watchdog_names_the_code_that_stalls_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 16, item 5): a blocking sync handler froze UDP and TCP with
    nothing in the log to say so."""
    caplog.set_level(logging.WARNING, logger="udpkit")
    watchdog = LoopWatchdog(threshold=0.2, interval=0.05)
    watchdog.start()
    try:
        await asyncio.sleep(0.1)
        assert watchdog.stalls == 0
        a_handler_that_sleeps(0.8)
        await asyncio.sleep(0.15)  # the loop runs again: one line says how long it stalled
    finally:
        watchdog.stop()
    assert watchdog.stalls == 1
    assert watchdog.longest >= 0.2
    stalled = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled) == 1
    assert "in a_handler_that_sleeps" in stalled[0]
    assert "test_handler_supervision.py" in stalled[0]
    assert any("ran again after a stall" in r.getMessage() for r in caplog.records)


def test_blocking_frame_without_a_frame() -> None:
    assert blocking_frame(None) == "unknown code"


async def test_threaded_handler_keeps_the_loop_free_while_calls_block() -> None:
    """Five calls blocked at once; the loop still runs and a sixth call is answered."""
    release = threading.Event()
    entered = threading.Semaphore(0)

    def handler(request: bytes, peer: Peer) -> bytes:
        if request == b"block":
            entered.release()
            release.wait(10)
        return b"done " + request

    threaded = ThreadedHandler(handler, threads=6)
    peer = Peer(("127.0.0.1", 1), "udp")
    try:
        blocked = [asyncio.ensure_future(threaded(b"block", peer)) for _ in range(5)]
        for _ in range(5):
            assert await asyncio.to_thread(entered.acquire, True, 5)
        assert await asyncio.wait_for(threaded(b"free", peer), 5) == b"done free"
        assert not any(task.done() for task in blocked)
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*blocked), 5) == [b"done block"] * 5
    finally:
        release.set()
        threaded.close()
