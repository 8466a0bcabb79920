"""Peers that vanish at the worst moment: the counters stay exact, nothing is logged as a
crash.  In-process servers on loopback, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from udpkit.server import Server, ServerConfig

LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])


def run_on(loop_name: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(scenario())


def reset_at_once(port: int) -> None:
    """Connect (the kernel completes it from the backlog), then reset (SO_LINGER 0)
    before the server's loop has had a turn to accept."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_reset_right_after_connect_is_counted_not_a_traceback(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 16, item 1): on uvloop the peer's address was already gone
    (``peername`` None), ``Peer.host`` raised TypeError once per connection, and 2,000
    such connections left the counters at ``opened=2001 closed=1``."""
    caplog.set_level(logging.ERROR)

    async def scenario() -> None:
        async with Server(ServerConfig(port=0, udp=False)) as server:
            for _ in range(200):
                reset_at_once(server.port)
            async with asyncio.timeout(10):
                while server.stats()["tcp"].connections_closed < 200:
                    await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await reader.readline() == b"Welcome!\n"
            writer.write(b"Tracy\nexit\n")
            assert await reader.read() == b"Hello, Tracy!\n"
            writer.close()
            async with asyncio.timeout(10):
                while server.open_connections:
                    await asyncio.sleep(0.01)
            stats = server.stats()["tcp"]
            assert stats.connections_opened == stats.connections_closed == 201
            assert stats.replied == 1

    run_on(loop_name, scenario)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []
