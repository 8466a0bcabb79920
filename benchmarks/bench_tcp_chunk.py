#!/usr/bin/env python3
"""Python-level cost of one received TCP chunk: udpkit's TcpConnection vs the uvloop peer's.

No sockets and no event loop work: each protocol's ``data_received`` is
called in a loop with a chunk of 1 or 16 request lines, on a transport whose
``write`` does nothing, so what is timed is the framing, the handler calls
and the bookkeeping alone (best of 5).  Run it with ``UDPKIT_NO_FASTPATH=1``
for udpkit's pure-Python path.

    .venv/bin/python benchmarks/bench_tcp_chunk.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import GreetingLines
from udpkit.server import Server, ServerConfig


class NullTransport:
    """A transport that takes every write and is never closing: the server's own cost
    of a connection, without a kernel (also used by bench_len16)."""

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: list[bytes]) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    abort = close


async def main() -> None:
    server = Server(ServerConfig(host="127.0.0.1", port=0, udp=False))
    await server.startup()
    try:
        connection = server._new_connection()
        connection.connection_made(NullTransport())  # type: ignore[arg-type]
        peer = GreetingLines()
        peer.connection_made(NullTransport())  # type: ignore[arg-type]
        for count in (1, 16):
            chunk = b"".join(b"n%d\n" % index for index in range(count))
            for name, protocol in (("uvloop peer", peer), ("udpkit", connection)):
                receive = protocol.data_received
                repeats = 200_000 // count
                best = float("inf")
                for _ in range(5):
                    started = time.perf_counter()
                    for _ in range(repeats):
                        receive(chunk)
                    best = min(best, (time.perf_counter() - started) / repeats)
                print(f"{count:2d} lines per chunk, {name:12s}: {best * 1e9:7.0f} ns per chunk")
    finally:
        await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
