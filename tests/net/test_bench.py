"""Tiers (c) and (e): the load generator end to end, on loopback.

Against the in-process greeting server (IPv4 and IPv6), against a fake peer
that duplicates, corrupts and delays replies on purpose, and against socat
running an echo service.  Short runs; no assertion on speed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import cast

import pytest

import udpkit
from udpkit.bench import BenchConfig, run_async
from udpkit.core.errors import RequestRefused, UsageError
from udpkit.core.handler import Peer
from udpkit.server import Server, ServerConfig


def quick(host: str, port: int, **options: object) -> BenchConfig:
    settings: dict[str, object] = {"duration": 0.5, "warmup": 0.1, "timeout": 1.0}
    settings.update(options)
    return BenchConfig(host=host, port=port, **settings)  # type: ignore[arg-type]


async def test_closed_loop_udp_against_the_server(server: Server, loopback: str) -> None:
    result = await run_async(quick(loopback, server.port, concurrency=8))
    assert result.received > 0
    assert result.sent == result.received + result.lost
    assert (result.lost, result.duplicates, result.late, result.wrong) == (0, 0, 0, 0)
    assert result.throughput > 0
    assert 0 < result.percentiles_us["p50"] <= result.percentiles_us["p99"]
    assert result.percentiles_us["p99.99"] <= result.percentiles_us["max"] * 1.001 + 1
    assert server.stats()["udp"].replied >= result.received
    document = result.as_dict()
    assert document["received"] == result.received
    assert set(document["latency_us"]) == {"p50", "p90", "p99", "p99.9", "p99.99", "max"}
    assert sum(item["received"] for item in document["intervals"]) == result.received


async def test_closed_loop_tcp_pipelined(server: Server, loopback: str) -> None:
    result = await run_async(
        quick(loopback, server.port, transport="tcp", connections=3, depth=4)
    )
    assert result.received > 0
    assert (result.lost, result.duplicates, result.wrong) == (0, 0, 0)
    assert server.stats()["tcp"].connections_opened == 3


async def test_requests_stop_the_run(server: Server, loopback: str) -> None:
    result = await run_async(quick(loopback, server.port, requests=300, duration=None,
                                   warmup=0.0))
    assert (result.sent, result.received) == (300, 300)


@pytest.mark.parametrize("poisson", [False, True], ids=["constant", "poisson"])
async def test_open_loop(server: Server, loopback: str, poisson: bool) -> None:
    result = await run_async(
        quick(loopback, server.port, rate=2000.0, poisson=poisson, seed=1, duration=0.5)
    )
    assert 700 <= result.sent <= 1300  # ~1000 asked; Poisson varies
    assert result.received == result.sent
    assert result.as_dict()["latency_from"] == "intended send time"


async def test_open_loop_over_tcp(server: Server, loopback: str) -> None:
    result = await run_async(
        quick(loopback, server.port, transport="tcp", connections=2, rate=1000.0)
    )
    assert result.received == result.sent > 0


def _drops_every_tenth(request: bytes, peer: Peer) -> bytes | None:
    seq = int(request[1:])
    return None if seq % 10 == 3 else b"Hello, " + request + b"!"


async def test_every_dropped_request_is_counted_lost() -> None:
    """The server answers all but the requests numbered 3, 13, 23...: exactly those are lost."""
    config = ServerConfig(host="127.0.0.1", port=0, app=_drops_every_tenth, tcp=False)
    async with Server(config) as running:
        result = await run_async(
            quick("127.0.0.1", running.port, concurrency=10, requests=200, duration=None,
                  warmup=0.0, timeout=0.2)
        )
    assert result.sent == 200
    assert result.lost == 20
    assert result.received == 180
    assert (result.duplicates, result.late, result.wrong) == (0, 0, 0)


async def test_tcp_requests_never_answered_give_their_place_back_at_their_timeout() -> None:
    """Regression: a TCP connection's place was freed only by a reply line, so requests
    the server never answered (3, 13, 23...) filled every pipelining place in turn
    and the closed loop stopped sending for good (this run of 200 never ended)."""
    config = ServerConfig(host="127.0.0.1", port=0, app=_drops_every_tenth, udp=False)
    async with Server(config) as running:
        async with asyncio.timeout(20):
            result = await run_async(
                quick("127.0.0.1", running.port, transport="tcp", connections=2, depth=4,
                      requests=200, duration=None, warmup=0.0, timeout=0.2)
            )
    assert result.sent == 200
    assert (result.lost, result.received) == (20, 180)
    assert (result.duplicates, result.late, result.wrong) == (0, 0, 0)


class _MischievousPeer(asyncio.DatagramProtocol):
    """Answers ``n<seq>`` like the greeting server, except by ``seq % 7``:
    1 twice, 2 with garbage, 3 too late (after the client's timeout)."""

    def __init__(self, late_until: int, delay: float) -> None:
        self.late_until = late_until
        self.delay = delay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        seq = int(data[1:])
        reply = b"Hello, " + data + b"!"
        kind = seq % 7
        if kind == 1:
            self.transport.sendto(reply, addr)
            self.transport.sendto(reply, addr)
        elif kind == 2:
            self.transport.sendto(b"garbage", addr)
        elif kind == 3:
            if seq < self.late_until:
                loop = asyncio.get_running_loop()
                loop.call_later(self.delay, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)


async def test_duplicates_wrong_and_late_replies_are_counted_apart() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _MischievousPeer(late_until=14, delay=0.3), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        result = await run_async(
            quick("127.0.0.1", port, concurrency=7, requests=35, duration=None, warmup=0.0,
                  timeout=0.2)
        )
    finally:
        transport.close()
    kinds = [seq % 7 for seq in range(35)]
    assert result.sent == 35
    assert result.lost == kinds.count(2) + kinds.count(3) == 10
    assert result.received == 25
    assert result.duplicates == kinds.count(1) == 5
    assert result.wrong == kinds.count(2) == 5
    assert result.late == 2  # requests 3 and 10 answered after their timeout


async def test_refused_port_is_reported(closed_udp_port: int) -> None:
    with pytest.raises(RequestRefused):
        await run_async(quick("127.0.0.1", closed_udp_port))
    with pytest.raises(RequestRefused):
        await run_async(quick("127.0.0.1", closed_udp_port, transport="tcp"))


async def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot resolve"):
        await run_async(quick("no-such-host.invalid", 9))
    with pytest.raises(UsageError, match="rate"):
        await run_async(quick("127.0.0.1", 9, rate=-1.0))


# --------------------------------------------------------------------------- socat


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_udp_echo(port: int, deadline: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                sock.sendto(b"probe", ("127.0.0.1", port))
                if sock.recv(100) == b"probe":
                    return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError("socat did not start")


@pytest.fixture
def socat_udp_echo() -> Iterator[int]:
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    port = _free_port(socket.SOCK_DGRAM)
    process = subprocess.Popen(
        ["socat", f"UDP-RECVFROM:{port},bind=127.0.0.1,fork", "EXEC:cat"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_udp_echo(port, time.monotonic() + 10)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def socat_tcp_echo() -> Iterator[int]:
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    port = _free_port(socket.SOCK_STREAM)
    process = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "EXEC:cat"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.peers
def test_library_function_against_socat_udp_echo(socat_udp_echo: int) -> None:
    result = udpkit.bench("127.0.0.1", socat_udp_echo, expect="echo", template="echo {seq}",
                          concurrency=4, requests=100, warmup=0.0, timeout=2.0)
    assert (result.sent, result.received, result.lost, result.wrong) == (100, 100, 0, 0)


@pytest.mark.peers
def test_regex_rule_against_socat_tcp_echo(socat_tcp_echo: int) -> None:
    result = udpkit.bench("127.0.0.1", socat_tcp_echo, transport="tcp", expect="^id={seq};",
                          template="id={seq};pad", size=32, connections=2, depth=4,
                          duration=0.5, warmup=0.1)
    assert result.received > 0
    assert (result.lost, result.wrong, result.duplicates) == (0, 0, 0)


@pytest.mark.peers
def test_processes_merge_their_histograms(socat_udp_echo: int) -> None:
    result = udpkit.bench("127.0.0.1", socat_udp_echo, expect="echo", concurrency=4,
                          requests=60, warmup=0.0, procs=2, timeout=2.0)
    assert result.processes == 2
    assert (result.sent, result.received) == (60, 60)
    assert result.hdr_histogram().get_total_count() == 60
