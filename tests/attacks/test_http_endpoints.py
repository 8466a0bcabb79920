"""Hostile clients of udpkit's HTTP endpoints: the proxy's control API and ``/metrics``.

Each case was seen to break an endpoint (issue 16, items 8 and 9) and is now a counted,
answered outcome.  In-process, loopback only, bounded by the endpoints' own short limits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncIterator

import pytest

from udpkit.core.counters import CounterSnapshot
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.impairment import Impairments, LinkPolicy, seeded_rng
from udpkit.http_server import HttpLimits
from udpkit.proxy import Proxy, ProxyConfig
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.stats import GlueCounters
from udpkit.proxy.udp import UdpRelay
from udpkit.server.binding import bind
from udpkit.server.metrics import MetricsServer, ServerCollector

HOST = "127.0.0.1"


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw``, read until the endpoint closes (it always answers, then closes)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def status_and_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), str(json.loads(body)["error"])


@pytest.fixture
async def control_port() -> AsyncIterator[int]:
    config = ProxyConfig(upstream_host=HOST, upstream_port=9, port=0, control_port=0,
                         tcp=False)
    async with Proxy(config) as proxy:
        assert proxy.control_port is not None
        yield proxy.control_port


def put(body: bytes, *, length: bytes | None = None) -> bytes:
    declared = str(len(body)).encode() if length is None else length
    return b"PUT /impairments HTTP/1.1\r\nContent-Length: " + declared + b"\r\n\r\n" + body


@pytest.mark.parametrize(("raw", "message"), [
    # Passes str.isdigit(), fails int(): there was no response at all.
    (put(b"", length="²".encode()), "Content-Length"),
    (put(b"", length="١٢".encode()), "Content-Length"),  # Arabic-Indic digits: int() takes them
    (put(b"", length=b"9" * 5000), "Content-Length"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
     "more than one Content-Length"),
    # json.loads raises ValueError past 4,300 digits: it was "internal error", a 500.
    (put(b'{"up": {"delay": ' + b"1" * 4301 + b"}}"), "not valid JSON"),
    (put(b'{"up": {"delay": 1e300}}'), "at most 600 s"),
    (put(b'{"up": {"jitter": 1e300}}'), "at most 600 s"),
    (put(b'{"up": {"rate": 5e-324}}'), "at least 1 byte/s"),
])
async def test_control_api_answers_hostile_numbers_with_a_400(
    control_port: int, raw: bytes, message: str
) -> None:
    status, error = status_and_error(await exchange(control_port, raw))
    assert status == 400
    assert message in error
    ok = await exchange(control_port, b"GET /impairments HTTP/1.1\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")  # the proxy is unharmed and unchanged
    assert json.loads(ok.partition(b"\r\n\r\n")[2])["up"]["delay"] == 0.0


async def test_the_delay_line_is_bounded_and_counts_what_it_refuses() -> None:
    """A long delay at a high rate queued every datagram: 29 -> 91 MB and growing."""
    loop = asyncio.get_running_loop()
    line = DelayLine(loop, max_bytes=1000)
    delivered: list[int] = []
    taken = [line.schedule(loop.time() + 0.05, functools.partial(delivered.append, i), 400)
             for i in range(4)]
    assert taken == [True, True, False, False]
    assert line.bytes == 800
    line.run_due(loop.time() + 1)
    assert delivered == [0, 1]
    assert line.bytes == 0
    line.close()


async def test_the_udp_relay_counts_datagrams_the_full_delay_line_refused() -> None:
    loop = asyncio.get_running_loop()
    sockets = bind(HOST, 0, udp=True, tcp=False)
    counters = GlueCounters()
    line = DelayLine(loop, max_bytes=250)
    up = LinkPolicy(Impairments(delay=5.0), rng=seeded_rng(1, "up"))
    down = LinkPolicy(rng=seeded_rng(1, "down"))
    relay = UdpRelay(sockets.udp, (HOST, 9), sockets.udp[0].family, up=up, down=down,
                     delay_line=line, counters=counters, max_sessions=10, idle_timeout=10)
    relay.start()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=(HOST, sockets.port))
    try:
        for _ in range(5):
            transport.sendto(b"x" * 100)
        for _ in range(200):
            if counters.delay_queue_full + line.bytes // 100 >= 5:
                break
            await asyncio.sleep(0.01)
        assert line.bytes == 200  # two held for their 5 s delay
        assert counters.delay_queue_full == 3  # the rest refused, each counted
    finally:
        transport.close()
        relay.close()
        line.close()


def collector() -> ServerCollector:
    empty = CounterSnapshot()
    return ServerCollector(lambda: {"udp": empty, "tcp": empty}, lambda: 0, LatencyHistogram())


async def test_idle_metrics_connections_cost_no_threads_and_are_closed() -> None:
    """786 idle connections held 788 threads, +21 MB and +786 fds in the server."""
    limits = HttpLimits(max_body=0, request_timeout=0.5, max_connections=4)
    threads = threading.active_count()
    metrics = MetricsServer(HOST, 0, collector(), limits=limits)
    try:
        await asyncio.sleep(0)  # let it start serving
        idle = [await asyncio.open_connection(HOST, metrics.port) for _ in range(12)]
        await asyncio.sleep(0.05)
        assert threading.active_count() == threads
        assert metrics.endpoint.open_connections == 4  # the cap; the others got a 503
        answers = []
        async with asyncio.timeout(5):
            for reader, writer in idle:
                answers.append((await reader.read()).split(b" ", 2)[1])
                writer.close()
        assert sorted(answers) == [b"408"] * 4 + [b"503"] * 8
        stats = metrics.endpoint.stats
        assert (stats.timed_out, stats.busy) == (4, 8)
        assert metrics.endpoint.open_connections == 0
        scrape = await exchange(metrics.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert scrape.startswith(b"HTTP/1.1 200 ")
        assert b"udpkit_tcp_open_connections 0.0" in scrape
    finally:
        metrics.close()


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /metrics HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n", 400),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /other HTTP/1.1\r\n\r\n", 404),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
])
async def test_metrics_endpoint_rejects_what_is_not_a_scrape(raw: bytes, status: int) -> None:
    metrics = MetricsServer(HOST, 0, collector())
    try:
        await asyncio.sleep(0)
        got, _ = status_and_error(await exchange(metrics.port, raw))
        assert got == status
        assert metrics.endpoint.stats.rejected == 1
    finally:
        metrics.close()


# --------------------------------------------------------------------------- Toxiproxy's API


@pytest.fixture
async def toxiproxy_api() -> AsyncIterator[int]:
    """A Toxiproxy server (no anonymous proxy) with one proxy named ``p``."""
    async with Proxy(ProxyConfig(upstream_port=None, control_port=0, seed=1)) as proxy:
        assert proxy.control_port is not None
        created = await exchange(proxy.control_port, request(
            "POST", "/proxies", b'{"name": "p", "upstream": "127.0.0.1:9"}'))
        assert created.startswith(b"HTTP/1.1 201 ")
        yield proxy.control_port


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize(("raw", "status", "message"), [
    (request("POST", "/proxies", b"{"), 400, "bad request body"),
    (request("POST", "/proxies", b"[" * 50_000), 400, "bad request body"),
    (request("POST", "/proxies", b'{"name": "' + b"1" * 5000 + b'"}'), 400, "at most 200"),
    (request("POST", "/proxies", b'{"name": "x", "upstream": ' + b"1" * 4301 + b"}"), 400,
     "bad request body"),
    (request("POST", "/proxies", b'{"name": "a/b", "upstream": "127.0.0.1:9"}'), 400,
     "without '/'"),
    (request("POST", "/proxies", b'{"name": "p", "upstream": "127.0.0.1:9"}'), 409,
     "proxy already exists"),
    (request("POST", "/proxies", b'{"name": "q", "upstream": "127.0.0.1:9", '
                                 b'"listen": "127.0.0.1:99999"}'), 400, "listen"),
    (request("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": '
                                          b'{"latency": 1e308}}'), 400, "must be in 0.."),
    (request("POST", "/proxies/p/toxics", b'{"type": "latency", "attributes": '
                                          b'{"latency": NaN}}'), 400, "must be a number"),
    (request("POST", "/proxies/p/toxics", b'{"type": "latency", "toxicity": -1}'), 400,
     "toxicity"),
    (request("POST", "/proxies/%2e%2e/toxics", b"{}"), 404, "proxy not found"),
    (request("PATCH", "/proxies/p/toxics/none", b"{}"), 404, "toxic not found"),
    (request("PUT", "/proxies/p", b"{}"), 405, "not allowed"),
    (request("POST", "/version"), 405, "not allowed"),
    (request("POST", "/proxies/p", b'{"enabled": "yes"}'), 400, "enabled"),
])
async def test_toxiproxy_api_answers_hostile_bodies(
    toxiproxy_api: int, raw: bytes, status: int, message: str
) -> None:
    response = await exchange(toxiproxy_api, raw)
    head, _, body = response.partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) == status
    document = json.loads(body)
    assert document["status"] == status
    assert message in document["error"]
    again = await exchange(toxiproxy_api, request("GET", "/proxies/p"))
    assert json.loads(again.partition(b"\r\n\r\n")[2])["name"] == "p"


async def test_toxiproxy_api_bounds_proxies_and_toxics(toxiproxy_api: int) -> None:
    for index in range(32):
        body = json.dumps({"type": "latency", "name": f"t{index}"}).encode()
        assert (await exchange(toxiproxy_api, request("POST", "/proxies/p/toxics", body))
                ).startswith(b"HTTP/1.1 200 ")
    response = await exchange(toxiproxy_api, request(
        "POST", "/proxies/p/toxics", b'{"type": "latency", "name": "one-more"}'))
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"more than 32 toxics" in response
