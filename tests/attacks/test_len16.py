"""Hostile len16 input against a running `udpkit serve --tcp-framing len16`, each asserting
a number: lengths over the limit, zero lengths, a slowloris on the length prefix and
seeded garbage, on the C fast path and the pure path, while a normal client is served.

Bounded in time, loopback only; the server runs in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from tests.processes import parse_summary, serve

PATHS = [pytest.param({}, id="fast"), pytest.param({"UDPKIT_NO_FASTPATH": "1"}, id="pure")]


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   message: bytes) -> bytes:
    writer.write(framed(message))
    async with asyncio.timeout(5):
        length = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(length)


async def drain_to_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the server says until it closes (a reset counts as closed)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
    return received


@pytest.mark.parametrize("env", PATHS)
async def test_hostile_lengths_are_answered_counted_and_closed(env: dict[str, str]) -> None:
    """100 connections each announce 0xFFFF bytes (over the 1024-byte limit), 100 a
    zero-length message, 100 a length one over the limit: each gets its error and is
    closed, without the server waiting for the bytes announced; a normal client on
    the same server is answered throughout."""
    hostile = {
        b"\xff\xff": b"error: request too long",
        b"\x00\x00": b"error: empty request",
        (1025).to_bytes(2, "big"): b"error: request too long",
    }
    with serve("--no-udp", "--tcp-framing", "len16", "--tcp-idle-timeout", "30",
               "--tcp-max-per-source", "1000", env=env) as server:
        normal = await asyncio.open_connection("127.0.0.1", server.port)
        assert await exchange(*normal, b"before") == b"Hello, before!"
        attackers = []
        for prefix in hostile:
            for _ in range(100):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(prefix + b"x" * 10)  # a few of the announced bytes, never all
                attackers.append((prefix, reader, writer))
        said = [(prefix, await drain_to_close(reader)) for prefix, reader, _ in attackers]
        assert await exchange(*normal, b"after") == b"Hello, after!"
        normal[1].close()
        for _, _, writer in attackers:
            writer.close()
        _, log = server.stop()
    assert all(answer == framed(hostile[prefix]) for prefix, answer in said)
    tcp = parse_summary(log)["tcp"]
    assert (tcp["received"], tcp["replied"], tcp["oversize"], tcp["empty"]) == (302, 2, 200, 100)
    assert tcp["opened"] == 301


@pytest.mark.parametrize("env", PATHS)
async def test_300_slowloris_connections_on_the_length_prefix_are_cut(env: dict[str, str]) -> None:
    with serve("--no-udp", "--tcp-framing", "len16", "--tcp-line-timeout", "0.5",
               "--tcp-idle-timeout", "30", "--tcp-max-per-source", "1000", env=env) as server:
        slow = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
        for index, (_, writer) in enumerate(slow):
            writer.write(b"\x00" if index % 2 else b"\x00\x05Mic")  # a prefix, or a message, begun
        normal = await asyncio.open_connection("127.0.0.1", server.port)
        assert await exchange(*normal, b"normal") == b"Hello, normal!"
        closed = [await drain_to_close(reader) for reader, _ in slow]
        assert await exchange(*normal, b"still") == b"Hello, still!"
        normal[1].close()
        for _, writer in slow:
            writer.close()
        _, log = server.stop()
    assert closed == [b""] * 300
    tcp = parse_summary(log)["tcp"]
    assert (tcp["received"], tcp["slow"]) == (2, 300)


@pytest.mark.parametrize("env", PATHS)
async def test_seeded_garbage_is_answered_or_closed_and_every_request_accounted(
    env: dict[str, str]
) -> None:
    """200 connections of random bytes (seeded): whatever each holds, the server answers
    the messages it frames, closes at the first bad length, and its counters add up."""
    rng = random.Random(17)
    with serve("--no-udp", "--tcp-framing", "len16", "--max-request", "64",
               "--tcp-idle-timeout", "1", "--tcp-line-timeout", "1",
               "--tcp-max-per-source", "1000", env=env) as server:
        connections = []
        for _ in range(200):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            small = bytes([0, rng.randrange(0, 70)])  # often a valid length, sometimes not
            garbage = small + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
            writer.write(garbage)
            writer.write_eof()
            connections.append((reader, writer))
        for reader, _ in connections:
            await drain_to_close(reader)
        normal = await asyncio.open_connection("127.0.0.1", server.port)
        assert await exchange(*normal, b"alive") == b"Hello, alive!"
        normal[1].close()
        for _, writer in connections:
            writer.close()
        code, log = server.stop()
    assert code == 0
    tcp = parse_summary(log)["tcp"]
    outcomes = tcp["replied"] + tcp["empty"] + tcp["oversize"] + tcp["handler"]
    assert tcp["received"] == outcomes
    assert tcp["oversize"] > 0
    assert tcp["replied"] > 1
    assert tcp["opened"] == 201
