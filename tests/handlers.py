"""Handlers that return a result of every kind, for tests that compare the TCP paths
and framings."""

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


def outcome_handler(request: bytes, peer: Peer) -> object:
    """By name: ``none`` None, ``raise`` raises, ``array`` a bytearray, ``wrong`` a wrong
    type, ``huge`` 65,536 bytes (one over a len16 prefix), ``max`` 65,535, ``later``
    async (``was later``, 20 ms on); anything else ``ok `` and the request."""
    if request == b"none":
        return None
    if request == b"raise":
        raise ValueError("boom")
    if request == b"array":
        return bytearray(b"from array")
    if request == b"wrong":
        return 42
    if request == b"huge":
        return b"x" * 65536
    if request == b"max":
        return b"m" * 65535
    if request == b"later":
        async def later() -> bytes:
            await asyncio.sleep(0.02)
            return b"was later"
        return later()
    return b"ok " + request
