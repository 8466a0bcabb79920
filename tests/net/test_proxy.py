"""Tier (c): the impairment proxy on real loopback sockets, in front of a udpkit server.

Rates are checked with exact binomial bounds; times only from below (a delay
cannot be shorter than configured) or with generous upper bounds, never as a
speed requirement.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import pathlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.binomial import assert_binomial
from udpkit import AsyncClient, RequestTimeout, RetryPolicy, Server, ServerConfig
from udpkit.core.impairment import NO_IMPAIRMENTS, Impairments, LinkSettings
from udpkit.proxy import Proxy, ProxyConfig


@asynccontextmanager
async def proxied(
    upstream_host: str, upstream_port: int, *, up: Impairments = NO_IMPAIRMENTS,
    down: Impairments = NO_IMPAIRMENTS, seed: int = 1, **options: object,
) -> AsyncIterator[Proxy]:
    config = ProxyConfig(
        upstream_host=upstream_host, upstream_port=upstream_port, host=upstream_host, port=0,
        impairments=LinkSettings(up=up, down=down), seed=seed, **options,  # type: ignore[arg-type]
    )
    async with Proxy(config) as proxy:
        yield proxy


@asynccontextmanager
async def greeting_server(host: str = "127.0.0.1") -> AsyncIterator[Server]:
    async with Server(ServerConfig(host=host, port=0)) as running:
        yield running


async def http(port: int, method: str, path: str, body: bytes | None = None, *,
               raw: bytes | None = None, host: str = "127.0.0.1") -> tuple[int, dict[str, object]]:
    """One HTTP request to the control API; (status, JSON body)."""
    reader, writer = await asyncio.open_connection(host, port)
    if raw is None:
        payload = body or b""
        raw = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n"
               ).encode() + payload
    writer.write(raw)
    async with asyncio.timeout(10):
        response = await reader.read()
    writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    document: dict[str, object] = json.loads(content)
    return status, document


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- forwarding


async def test_udp_and_tcp_are_forwarded(server: Server, loopback: str) -> None:
    async with proxied(loopback, server.port) as proxy:
        async with AsyncClient(loopback, proxy.port) as udp:
            assert await udp.request(b"Michael") == b"Hello, Michael!"
        async with AsyncClient(loopback, proxy.port, transport="tcp") as tcp:
            assert await tcp.request(b"Tracy") == b"Hello, Tracy!"
            assert await tcp.request(b"Sarah") == b"Hello, Sarah!"
        async with asyncio.timeout(10):  # the relay ends once both sides have closed
            while proxy.stats().tcp_active:
                await asyncio.sleep(0.01)
        stats = proxy.stats()
    assert stats.up.received == stats.up.forwarded == 1
    assert stats.down.received == stats.down.forwarded == 1
    assert stats.glue.sessions_opened == 1
    assert stats.glue.tcp_opened == 1
    assert stats.up.stream_bytes == len(b"Tracy\nSarah\n") + len(b"exit\n")
    assert server.stats()["udp"].replied == 1


async def test_each_client_gets_its_own_replies(server: Server, loopback: str) -> None:
    async with proxied(loopback, server.port) as proxy:
        clients = [AsyncClient(loopback, proxy.port, matcher="any") for _ in range(5)]
        for client in clients:
            await client.connect()
        try:
            replies = await asyncio.gather(*(
                client.request(f"client-{i}-{j}".encode())
                for j in range(20) for i, client in enumerate(clients)))
        finally:
            for client in clients:
                await client.close()
        assert proxy.stats().glue.sessions_opened == 5
    # With 'any', a client accepts whatever comes: only per-client sockets make this hold.
    expected = [f"Hello, client-{i}-{j}!".encode() for j in range(20) for i in range(5)]
    assert sorted(replies) == sorted(expected)
    assert all(client.stats().unexpected == 0 for client in clients)


async def test_idle_sessions_expire_and_the_table_is_bounded() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, idle_timeout=0.2, max_sessions=2) as proxy:
        for i in range(3):
            async with AsyncClient("127.0.0.1", proxy.port) as client:
                await client.request(f"n{i}".encode())
        assert proxy.stats().glue.sessions_evicted == 1
        assert proxy.stats().sessions_active == 2
        async with asyncio.timeout(10):
            while proxy.stats().sessions_active:
                await asyncio.sleep(0.05)
        glue = proxy.stats().glue
    assert (glue.sessions_opened, glue.sessions_evicted, glue.sessions_expired) == (3, 1, 2)


async def test_a_closed_upstream_is_counted_not_fatal(closed_udp_port: int) -> None:
    async with proxied("127.0.0.1", closed_udp_port) as proxy:
        policy = RetryPolicy(timeout=0.5, retries=2)
        async with AsyncClient("127.0.0.1", proxy.port, policy=policy) as client:
            with pytest.raises(RequestTimeout):
                await client.request(b"x")
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(10):
            try:
                ended = await reader.read()
            except ConnectionResetError:  # a RST: what the proxy sends
                ended = b""
        assert ended == b""
        writer.close()
        glue = proxy.stats().glue
    assert glue.upstream_refused >= 1
    assert glue.tcp_upstream_failures == 1


async def test_the_proxy_survives_whatever_it_forwards(server: Server, loopback: str) -> None:
    """Junk of every size, corrupted, truncated and duplicated, UDP and TCP, then a
    normal request still works."""
    family = socket.AF_INET6 if ":" in loopback else socket.AF_INET
    mangle = Impairments(corrupt=0.5, truncate=0.5, duplicate=0.5)
    async with proxied(loopback, server.port, up=mangle, down=mangle) as proxy:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            for size in (0, 1, 2, 100, 1500, 9000, 65507):
                sock.sendto(bytes(range(256)) * (size // 256) + b"\xff" * (size % 256),
                            (loopback, proxy.port))
        for _ in range(3):
            _, writer = await asyncio.open_connection(loopback, proxy.port)
            writer.write(b"\x00\xff" * 5000 + b"\n" * 10 + b"\r\n")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # leave with a RST
        proxy.set_settings(LinkSettings())
        async with AsyncClient(loopback, proxy.port) as client:
            assert await client.request(b"still here") == b"Hello, still here!"
        async with AsyncClient(loopback, proxy.port, transport="tcp") as client:
            assert await client.request(b"still here") == b"Hello, still here!"


# --------------------------------------------------------------------------- TCP impairments


async def test_tcp_latency_shows_in_round_trips() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, up=Impairments(delay=0.05)) as proxy, AsyncClient(
            "127.0.0.1", proxy.port, transport="tcp") as client:
        answers = [await client.exchange(f"n{i}".encode()) for i in range(5)]
    assert min(answer.elapsed for answer in answers) >= 0.049


async def test_tcp_reset_after_n_bytes() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, down=Impairments(reset_after=20)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"Michael\n")
        received = b""
        ended_by: type[BaseException] | None = None
        async with asyncio.timeout(10):
            try:
                while chunk := await reader.read(100):
                    received += chunk
            except ConnectionResetError as exc:
                ended_by = type(exc)
        writer.close()
        stats = proxy.stats().down
    assert b"Welcome!\nHello, Michael!\n".startswith(received)
    assert len(received) <= 20
    assert stats.resets == 1
    assert stats.stream_bytes == 20
    assert ended_by in (ConnectionResetError, None)


async def test_tcp_slow_close_holds_the_close_back() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, down=Impairments(slow_close=0.3)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await reader.readline() == b"Welcome!\n"
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"exit\n")
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        held = loop.time() - started
        writer.close()
    assert held >= 0.29


# --------------------------------------------------------------------------- control API


async def test_control_api_switches_faults_mid_run() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, control_port=0) as proxy:
        assert proxy.control_port is not None
        port = proxy.control_port
        status, settings = await http(port, "GET", "/impairments")
        assert status == 200
        assert settings["up"] == Impairments().as_json()
        policy = RetryPolicy(timeout=0.3, retries=1)
        async with AsyncClient("127.0.0.1", proxy.port, policy=policy) as client:
            assert await client.request(b"a") == b"Hello, a!"
            status, body = await http(port, "PUT", "/impairments",
                                      json.dumps({"up": {"loss": 1.0}}).encode())
            assert status == 200
            assert body["up"]["loss"] == 1.0  # type: ignore[index]
            with pytest.raises(RequestTimeout):
                await client.request(b"b")
            status, body = await http(port, "PATCH", "/impairments",
                                      b'{"up": {"loss": 0}, "down": {"delay": "20ms"}}')
            assert status == 200
            answer = await client.exchange(b"c")
            assert answer.elapsed >= 0.019
        status, stats = await http(port, "GET", "/stats")
    assert status == 200
    assert stats["up"]["dropped_loss"] == 2  # type: ignore[index]
    assert stats["up"]["forwarded"] == 2  # type: ignore[index]
    assert stats["down"]["delayed"] == 1  # type: ignore[index]
    assert proxy.settings.down == Impairments(delay=0.02)


@pytest.mark.parametrize(("request_bytes", "status", "message"), [
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope", 400, "not valid JSON"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"up\": {\"x\": 1}}", 400,
     "unknown impairment 'x'"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"up\": {\"loss\": 2}}", 400,
     "probability in [0, 1]"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 22\r\n\r\n{\"up\": {\"loss\": true}}",
     400, "not a boolean"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400, "JSON object"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"left\": {}}", 400,
     "unknown direction"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413, "exceeds"),
    (b"PUT /impairments HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Content-Length"),
    (b"PUT /impairments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "chunked"),
    (b"DELETE /stats HTTP/1.1\r\n\r\n", 405, "not allowed"),
    (b"GET /nowhere HTTP/1.1\r\n\r\n", 404, "no such endpoint"),
    (b"\x00\x01garbage\r\n\r\n", 400, "bad request line"),
    (b"GET /stats HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad header"),
    (b"GET /stats HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n", 431, "longer than"),
])
async def test_bad_control_requests_get_a_clear_4xx(
        request_bytes: bytes, status: int, message: str) -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, control_port=0, up=Impairments(delay=0.001)) as proxy:
        assert proxy.control_port is not None
        got, body = await http(proxy.control_port, "", "", raw=request_bytes)
        assert got == status
        assert message in str(body["error"])
        # Nothing changed, and the proxy still works.
        assert proxy.settings.up == Impairments(delay=0.001)
        async with AsyncClient("127.0.0.1", proxy.port) as client:
            assert await client.request(b"ok") == b"Hello, ok!"


# --------------------------------------------------------------------------- acceptance


async def run_concurrently(client: AsyncClient, count: int, concurrency: int,
                           ) -> tuple[list[tuple[int, float]], int]:
    """``count`` requests, ``concurrency`` in flight; (answered (seq, rtt) in arrival
    order, failures)."""
    sequence = itertools.count()
    answered: list[tuple[int, float]] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while (seq := next(sequence)) < count:
            try:
                answer = await client.exchange(f"{seq}".encode())
            except RequestTimeout:
                failures += 1
            else:
                answered.append((seq, answer.elapsed))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return answered, failures


async def test_acceptance_default_retries_survive_ten_percent_loss_each_way() -> None:
    """`udpkit send`'s default retry policy answers >= 99.5 % under 10 % loss each way."""
    count = 2000
    loss = Impairments(loss=0.1)
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, up=loss, down=loss, seed=6) as proxy:
        async with AsyncClient("127.0.0.1", proxy.port, policy=RetryPolicy()) as client:
            answered, failures = await run_concurrently(client, count, concurrency=200)
            client_stats = client.stats()
        stats = proxy.stats()
    print(f"\nacceptance: {len(answered)}/{count} answered ({len(answered) / count:.2%}), "
          f"{client_stats.retransmissions} retransmissions, proxy dropped "
          f"{stats.up.dropped} of {stats.up.received} up, {stats.down.dropped} of "
          f"{stats.down.received} down")
    assert len(answered) + failures == count
    assert len(answered) >= 0.995 * count
    assert client_stats.transmissions == stats.up.received
    assert_binomial(stats.up.dropped_loss, stats.up.received, 0.1, what="loss up")
    assert_binomial(stats.down.dropped_loss, stats.down.received, 0.1, what="loss down")


async def test_acceptance_a_50_ms_delay_with_10_ms_jitter_shows_in_round_trips() -> None:
    async with greeting_server() as server, proxied(
            "127.0.0.1", server.port, up=Impairments(delay=0.05, jitter=0.01)) as proxy, \
            AsyncClient("127.0.0.1", proxy.port) as client:
        answered, failures = await run_concurrently(client, 300, concurrency=20)
    rtts = [rtt for _, rtt in answered]
    p10, median, p90 = (percentile(rtts, f) for f in (0.1, 0.5, 0.9))
    print(f"\ndelay 50+-10 ms: min {min(rtts) * 1e3:.1f} p10 {p10 * 1e3:.1f} "
          f"median {median * 1e3:.1f} p90 {p90 * 1e3:.1f} max {max(rtts) * 1e3:.1f} ms")
    assert failures == 0
    assert min(rtts) >= 0.04 - 1e-3
    assert 0.047 <= median <= 0.25  # 50 ms and the machine's overhead, generously
    assert p90 - p10 >= 0.008  # the jitter spreads them (uniform +-10 ms: ~16 ms)


async def test_acceptance_loss_duplicate_and_reorder_rates_seen_by_the_client() -> None:
    """The client measures what the proxy was told to do, within exact binomial bounds,
    and exactly what the proxy says it did."""
    count = 3000
    up = Impairments(loss=0.1, duplicate=0.05, reorder=0.1, reorder_gap=0.05)
    async with greeting_server() as server, proxied("127.0.0.1", server.port, up=up,
                                                    seed=11) as proxy:
        policy = RetryPolicy(timeout=0.5, retries=0)
        async with AsyncClient("127.0.0.1", proxy.port, policy=policy) as client:
            answered, failures = await run_concurrently(client, count, concurrency=50)
            await asyncio.sleep(0.1)  # let the last duplicates arrive
            client_stats = client.stats()
        stats = proxy.stats().up
    highest, overtaken = -1, 0
    for seq, _ in answered:
        if seq < highest:
            overtaken += 1
        highest = max(highest, seq)
    delivered = len(answered)
    print(f"\nrates seen by the client: loss {failures / count:.4f} (set 0.1), duplicates "
          f"{client_stats.duplicates / delivered:.4f} (0.05), reordered "
          f"{overtaken / delivered:.4f} (0.1); proxy: {stats.dropped} dropped, "
          f"{stats.duplicated} duplicated, {stats.reordered} held back")
    assert failures == stats.dropped_loss
    assert client_stats.duplicates == stats.duplicated
    assert_binomial(failures, count, 0.1, what="loss")
    assert_binomial(client_stats.duplicates, delivered, 0.05, what="duplicates")
    # A held-back request is overtaken unless its duplicate (not held) got there first.
    assert stats.reordered - stats.duplicated <= overtaken <= stats.reordered
    assert_binomial(stats.reordered, delivered, 0.1, what="reordered")


async def test_the_same_seed_gives_the_same_decisions() -> None:
    """Sequential requests: the proxy sees the same sequence, so it decides the same."""
    runs = []
    for _ in range(2):
        async with greeting_server() as server, proxied(
                "127.0.0.1", server.port, up=Impairments(loss=0.3), seed=42) as proxy:
            policy = RetryPolicy(timeout=0.2, retries=0)
            outcomes = []
            async with AsyncClient("127.0.0.1", proxy.port, policy=policy) as client:
                for i in range(40):
                    try:
                        await client.request(f"n{i}".encode())
                        outcomes.append(True)
                    except RequestTimeout:
                        outcomes.append(False)
            runs.append(outcomes)
    assert runs[0] == runs[1]
    assert not all(runs[0])


async def test_acceptance_udpkit_bench_through_the_proxy() -> None:
    """`udpkit bench` (issue 3) measures what the proxy was told to do and did."""
    from udpkit.bench import BenchConfig, run_async

    count = 3000
    up = Impairments(loss=0.1, duplicate=0.05, reorder=0.1, reorder_gap=0.05)
    async with greeting_server() as server:
        async with proxied("127.0.0.1", server.port, up=up, seed=3) as proxy:
            lossy = await run_async(BenchConfig(host="127.0.0.1", port=proxy.port,
                                                concurrency=32, requests=count, warmup=0,
                                                timeout=0.5))
            await asyncio.sleep(0.1)
            stats = proxy.stats().up
        async with proxied("127.0.0.1", server.port,
                           up=Impairments(delay=0.05, jitter=0.01)) as proxy:
            slow = await run_async(BenchConfig(host="127.0.0.1", port=proxy.port,
                                               concurrency=16, requests=300, warmup=0,
                                               timeout=1.0))
    print(f"\nbench through the proxy: lost {lossy.lost}/{lossy.sent}, duplicates "
          f"{lossy.duplicates}, reordered {lossy.reordered} (proxy: {stats.dropped} dropped, "
          f"{stats.duplicated} duplicated, {stats.reordered} held back); delay 50+-10 ms: "
          f"p50 {slow.percentiles_us['p50'] / 1e3:.1f} p90 {slow.percentiles_us['p90'] / 1e3:.1f}"
          f" ms")
    assert lossy.sent == stats.received == count
    assert lossy.lost == stats.dropped
    assert lossy.duplicates == stats.duplicated
    assert_binomial(lossy.lost, count, 0.1, what="loss seen by bench")
    assert_binomial(lossy.duplicates, lossy.received, 0.05, what="duplicates seen by bench")
    assert_binomial(stats.reordered, lossy.received, 0.1, what="reordered by the proxy")
    assert 0 < lossy.reordered <= stats.reordered
    assert slow.lost == 0
    assert 47_000 <= slow.percentiles_us["p50"] <= 250_000
    assert slow.percentiles_us["p90"] - slow.percentiles_us["p50"] >= 4_000  # jitter shows


# ------------------------------------------------------------------ kernel drops


async def _settle(proxy: Proxy, sent_up: int, sent_down: int) -> None:
    """Until every datagram sent to the proxy is read or counted as a kernel drop."""
    async with asyncio.timeout(20):
        while True:
            stats = proxy.stats()
            if (stats.up.received + stats.glue.kernel_drops_up == sent_up
                    and stats.down.received + stats.glue.kernel_drops_down == sent_down):
                return
            await asyncio.sleep(0.02)


async def test_datagrams_the_kernel_drops_on_the_proxy_s_sockets_are_counted() -> None:
    """Regression: a burst faster than the proxy reads overflowed its sockets' receive
    buffers and the kernel's drops went uncounted (the proxy saw 270 of 1,000).  Every
    datagram sent to the proxy, either way, is now read or counted as a kernel drop."""
    burst, size = 30_000, 1_000  # 30 MB at once: more than any receive buffer holds
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind(("127.0.0.1", 0))
    client.setblocking(False)
    service.setblocking(False)
    try:
        async with proxied("127.0.0.1", service.getsockname()[1]) as proxy:
            target = ("127.0.0.1", proxy.port)
            client.sendto(b"open a session", target)
            async with asyncio.timeout(10):
                while True:
                    try:
                        _, upstream_socket = service.recvfrom(100)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
            # the event loop does not run during these loops: the proxy reads nothing
            payload = b"x" * size
            for _ in range(burst):
                service.sendto(payload, upstream_socket)  # replies to the one session
            for _ in range(burst):
                with contextlib.suppress(BlockingIOError):
                    client.sendto(payload, target)
            await _settle(proxy, burst + 1, burst)
            stats = proxy.stats()
            assert stats.glue.kernel_drops_up > 0
            assert stats.glue.kernel_drops_down > 0
            shown = stats.as_json()["proxy"]
            assert isinstance(shown, dict)
            assert shown["kernel_drops_up"] == stats.glue.kernel_drops_up
    finally:
        service.close()
        client.close()


def _rmem_max() -> int:
    return int(pathlib.Path("/proc/sys/net/core/rmem_max").read_text())


async def test_the_proxy_s_sockets_ask_for_a_large_receive_buffer(server: Server,
                                                                  loopback: str) -> None:
    from udpkit.proxy.udp import SOCKET_BUFFER

    granted = 2 * min(SOCKET_BUFFER, _rmem_max())  # Linux doubles what it grants
    async with proxied(loopback, server.port) as proxy:
        async with AsyncClient(loopback, proxy.port) as udp:
            assert await udp.request(b"Tom") == b"Hello, Tom!"
        relay = proxy._udp
        assert relay is not None
        sockets = [*relay.listeners, *(s.upstream for s in relay.sessions.values())]
        assert len(sockets) == 2
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == granted
