"""A handler that returns a result of every kind, for tests that compare the TCP paths."""

from __future__ import annotations

import asyncio

from udpkit.core.handler import Peer


def mixed_handler(request: bytes, peer: Peer) -> object:
    """By the first letter: n None, r raises, b bytearray, w a wrong type, a async (an:
    async None), anything else bytes."""
    first = request[:1]
    if first == b"n":
        return None
    if first == b"r":
        raise ValueError("boom")
    if first == b"b":
        return bytearray(b"B" + request)
    if first == b"w":
        return 42
    if first == b"a":
        async def later() -> bytes | None:
            await asyncio.sleep(0)
            return None if request == b"an" else b"A" + request
        return later()
    return b"<" + request + b">"
