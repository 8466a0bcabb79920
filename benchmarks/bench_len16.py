#!/usr/bin/env python3
"""Python-level cost of one received TCP chunk, len16 framing against line framing, on
the C splitter and on the pure path, in one run.

No sockets and no event loop work (as ``bench_tcp_chunk.py``): a server's
``TcpConnection.data_received`` is called in a loop with a chunk of 1 or 16
greeting requests, on a transport whose ``write`` does nothing, so what is
timed is the framing, the handler calls and the bookkeeping alone (best of 5).
Prints ns per chunk for each framing and path, and each framing's pure/C
ratio: why len16 goes through the C splitter rather than the pure path.

    .venv/bin/python benchmarks/bench_len16.py
"""

from __future__ import annotations

import asyncio
import logging
import time

from bench_tcp_chunk import NullTransport

from udpkit.core.framing import FramingName
from udpkit.server import Server, ServerConfig


def chunk(framing: FramingName, count: int) -> bytes:
    names = [b"n%d" % index for index in range(count)]
    if framing == "line":
        return b"".join(name + b"\n" for name in names)
    return b"".join(len(name).to_bytes(2, "big") + name for name in names)


async def per_chunk(framing: FramingName, fast: bool, count: int) -> float:
    """Best of 5: seconds per chunk of ``count`` requests."""
    config = ServerConfig(host="127.0.0.1", port=0, udp=False, tcp_framing=framing,
                          fast_path=fast)
    server = Server(config)
    await server.startup()
    try:
        connection = server._new_connection()
        connection.connection_made(NullTransport())  # type: ignore[arg-type]
        assert (connection.reader is not None) is fast, "the C extension is not built"
        receive = connection.data_received
        data = chunk(framing, count)
        repeats = 200_000 // count
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                receive(data)
            best = min(best, (time.perf_counter() - started) / repeats)
        return best
    finally:
        await server.shutdown()


async def main() -> None:
    logging.getLogger("udpkit").setLevel(logging.ERROR)  # the watchdog sees the timed loops
    framings: tuple[FramingName, ...] = ("line", "len16")
    for count in (1, 16):
        for framing in framings:
            fast = await per_chunk(framing, True, count)
            pure = await per_chunk(framing, False, count)
            print(f"{count:2d} requests per chunk, {framing:5s}: C {fast * 1e9:7.0f} ns, "
                  f"pure {pure * 1e9:7.0f} ns per chunk (pure/C {pure / fast:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
