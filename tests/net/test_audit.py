"""Tier (c): ``udpkit.audit`` against real sockets on loopback: udpkit's greeting
server and a plain asyncio echo server started here."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest

from udpkit.audit import AuditConfig, audit_async
from udpkit.core.errors import RequestRefused, UsageError
from udpkit.server import Server, ServerConfig

SIZES = (0, 1, 2, 4, 8, 64, 1024, 1472)
OVERSIZE = (1500, 9000, 65507)
PROBES = 2


def quick(host: str, port: int, **changes: object) -> AuditConfig:
    """A few sizes and two short ramp steps: a couple of seconds per run."""
    options: dict[str, object] = {
        "host": host, "port": port, "sizes": SIZES, "probes": PROBES, "timeout": 0.3,
        "oversize": OVERSIZE, "rates": (100.0, 500.0), "step_duration": 0.2, "max_time": 10.0,
    }
    options.update(changes)
    return AuditConfig(**options)  # type: ignore[arg-type]


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport is not registered as a DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


@asynccontextmanager
async def echo_server(host: str) -> AsyncIterator[int]:
    """A plain asyncio UDP echo server (RFC 862) on a free port; yields the port."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _Echo, local_addr=(host, 0))
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


async def test_udpkit_greeting_amplifies_by_n_plus_8_over_n(server: Server, loopback: str) -> None:
    report = await audit_async(quick(loopback, server.port))
    for size in (1, 2, 4, 8, 64, 1024):
        result = report.size(size)
        assert (result.sent, result.replies) == (PROBES, PROBES)
        assert result.reply_bytes == PROBES * (size + 8)
        assert result.byte_factor == (size + 8) / size
        assert result.packet_factor == 1.0
    # Empty and larger than max_request (1024): dropped, never answered.
    assert report.size(0).replies == 0
    assert report.size(1472).replies == 0
    assert report.empty is not None
    assert (report.empty.sent, report.empty.replies) == (PROBES, 0)
    assert [(r.size, r.sent, r.replies) for r in report.oversize] == [
        (size, PROBES, 0) for size in OVERSIZE]
    assert (report.max_byte_factor, report.worst_size) == (9.0, 1)
    assert report.header_bytes == (48 if ":" in loopback else 28)
    assert report.verdict("RFC 8085").status == "amplifies"
    assert report.verdict("RFC 9000").status == "exceeds"
    assert "request sizes 1, 2 " in report.verdict("RFC 9000").detail
    # Loopback is exempt from udpkit's rate limit by default.
    assert [step.replies for step in report.ramp] == [step.sent for step in report.ramp]
    assert report.ramp_request_size == 8
    assert report.rate_limit.status == "unlimited"
    assert report.notes == ()
    # The server counted every empty datagram the audit sent.
    assert server.stats()["udp"].dropped_empty == 2 * PROBES


async def test_the_audit_finds_udpkits_rate_limit_when_loopback_is_not_exempt(
    loopback: str,
) -> None:
    config = ServerConfig(host=loopback, port=0, rate_limit=100.0, rate_burst=50.0,
                          limit_exempt=())
    async with Server(config) as server:
        report = await audit_async(quick(loopback, server.port, sizes=(8,), empty=False,
                                         oversize=(), rates=(20.0, 2000.0),
                                         step_duration=0.5))
        dropped = server.stats()["udp"].dropped_rate_limited
    first, second = report.ramp
    assert first.answered_fraction == 1.0
    assert second.limited
    assert report.rate_limit.status == "limited"
    assert (report.rate_limit.last_full_rate, report.rate_limit.limit_rate) == (20.0, 2000.0)
    assert dropped == second.sent - second.replies


async def test_max_amplification_3_meets_rfc_9000(loopback: str) -> None:
    async with Server(ServerConfig(host=loopback, port=0, max_amplification=3.0)) as server:
        report = await audit_async(quick(loopback, server.port, rates=()))
    assert report.size(1).replies == 0
    assert report.size(2).replies == 0
    assert report.size(4).byte_factor == 3.0
    assert report.verdict("RFC 9000").status == "ok"
    assert report.verdict("RFC 8085").status == "amplifies"
    assert report.verdict("Rate limit").status == "unknown"


async def test_plain_echo_server_is_factor_one(loopback: str) -> None:
    async with echo_server(loopback) as port:
        report = await audit_async(quick(loopback, port))
    for result in report.sizes[1:]:
        assert (result.sent, result.replies) == (PROBES, PROBES)
        assert result.reply_bytes == PROBES * result.size
        assert result.byte_factor == 1.0
    # An empty datagram is echoed as an empty one, or not at all (asyncio's sendto
    # skips empty data before Python 3.13): either way no bytes to amplify.
    assert report.empty is not None
    for empty in (report.size(0), report.empty):
        assert empty.replies in (0, PROBES)
        assert empty.reply_bytes == 0
        assert empty.byte_factor is None
    assert [(r.size, r.replies, r.largest_reply) for r in report.oversize] == [
        (size, PROBES, size) for size in OVERSIZE]
    assert report.max_byte_factor == 1.0
    assert report.max_packet_factor == 1.0
    assert report.verdict("RFC 8085").status == "ok"
    assert report.verdict("RFC 9000").status == "ok"
    assert report.rate_limit.status == "unlimited"


async def test_a_closed_port_is_refused(closed_udp_port: int) -> None:
    with pytest.raises(RequestRefused) as caught:
        await audit_async(quick("127.0.0.1", closed_udp_port))
    assert caught.value.address == f"127.0.0.1:{closed_udp_port}"


async def test_a_silent_service_has_nothing_to_ramp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        report = await audit_async(quick("127.0.0.1", port, sizes=(1, 8), oversize=(),
                                         timeout=0.1))
    assert [r.replies for r in report.sizes] == [0, 0]
    assert report.ramp == ()
    assert report.notes == ("rate ramp skipped: no request size of the sweep was answered",)
    assert report.verdict("RFC 8085").detail == "no request was answered: nothing to reflect"


async def test_the_time_budget_skips_what_no_longer_fits() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        report = await audit_async(quick("127.0.0.1", port, sizes=(1, 2, 3, 4), oversize=(),
                                         empty=False, timeout=0.2, max_time=0.5))
    assert [r.size for r in report.sizes] == [1, 2]
    assert report.notes[0] == "time budget spent: sweep sizes [3, 4] not probed"


async def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot resolve host"):
        await audit_async(quick("no-such-host.invalid", 9999))
    with pytest.raises(UsageError, match="--probes"):
        await audit_async(quick("127.0.0.1", 9999, probes=0))
