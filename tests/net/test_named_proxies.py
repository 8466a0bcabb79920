"""Tier (c): named proxies (Toxiproxy's API) on real loopback sockets, in front of a
udpkit greeting server: life cycle, live toxic changes, seeds, both protocols on one port.

Times are checked only from below (a toxic cannot be faster than it says), never as a
speed requirement; tests/peers measures the toxics against their figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from udpkit import AsyncClient, RequestTimeout, RetryPolicy, Server, ServerConfig
from udpkit.core.handler import format_address
from udpkit.core.toxics import ToxicError
from udpkit.core.toxiproxy import proxy_from_json
from udpkit.proxy import Proxy, ProxyConfig
from udpkit.proxy.named import NamedProxy


@asynccontextmanager
async def toxiproxy(seed: int = 1) -> AsyncIterator[Proxy]:
    async with Proxy(ProxyConfig(upstream_port=None, seed=seed)) as proxy:
        yield proxy


@asynccontextmanager
async def greeting(host: str = "127.0.0.1") -> AsyncIterator[Server]:
    async with Server(ServerConfig(host=host, port=0)) as running:
        yield running


async def create(proxy: Proxy, **body: object) -> NamedProxy:
    return await proxy.collection.create(proxy_from_json(body))


def port_of(named: NamedProxy) -> int:
    return int(named.listen.rpartition(":")[2])


async def test_udp_and_tcp_on_one_port(loopback: str) -> None:
    async with greeting(loopback) as server, toxiproxy() as proxy:
        named = await create(proxy, name="g", protocol="both",
                             listen=format_address((loopback, 0)),
                             upstream=format_address((loopback, server.port)))
        async with AsyncClient(loopback, port_of(named)) as udp:
            assert await udp.request(b"u") == b"Hello, u!"
        async with AsyncClient(loopback, port_of(named), transport="tcp") as tcp:
            assert await tcp.request(b"t") == b"Hello, t!"
        summary = named.summary()
    assert summary["protocol"] == "both"
    assert summary["upstream_stream"]["datagrams_forwarded"] == 1  # type: ignore[index]


async def test_proxies_come_and_go_without_disturbing_each_other() -> None:
    async with greeting() as server, toxiproxy() as proxy:
        upstream = f"127.0.0.1:{server.port}"
        a = await create(proxy, name="a", upstream=upstream, protocol="both")
        b = await create(proxy, name="b", upstream=upstream, protocol="both")
        async with AsyncClient("127.0.0.1", port_of(a), transport="tcp") as open_on_a:
            assert await open_on_a.request(b"1") == b"Hello, 1!"
            await proxy.collection.update("b", {"enabled": False})
            await proxy.collection.delete("b")
            assert await open_on_a.request(b"2") == b"Hello, 2!"  # a's connection lives on
        with pytest.raises(ToxicError, match="proxy not found"):
            proxy.collection.get("b")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port_of(b))
        again = await create(proxy, name="b", upstream=upstream, listen=b.listen)
        assert again.listen == b.listen  # the port was given back


async def test_a_toxic_change_reaches_open_connections() -> None:
    async with greeting() as server, toxiproxy() as proxy:
        named = await create(proxy, name="g", upstream=f"127.0.0.1:{server.port}")
        async with AsyncClient("127.0.0.1", port_of(named), transport="tcp") as client:
            assert (await client.exchange(b"fast")).elapsed < 5
            await proxy.collection.add_toxic("g", {"type": "latency",
                                                   "attributes": {"latency": 150}})
            assert (await client.exchange(b"slow")).elapsed >= 0.149
            await proxy.collection.add_toxic("g", {"type": "timeout", "stream": "upstream"})
            await proxy.collection.remove_toxic("g", "timeout_upstream")
            assert await client.request(b"after") == b"Hello, after!"
            assert (await client.exchange(b"x")).elapsed >= 0.149
        counters = named.toxic_counters["latency_downstream"]
    assert counters.applied == 3  # added, then re-rolled twice on the same connection
    assert counters.delayed >= 3


async def test_a_timeout_toxic_closes_open_connections_later(loopback: str) -> None:
    async with greeting(loopback) as server, toxiproxy() as proxy:
        named = await create(proxy, name="g", listen=format_address((loopback, 0)),
                             upstream=format_address((loopback, server.port)))
        reader, writer = await asyncio.open_connection(loopback, port_of(named))
        assert await reader.readline() == b"Welcome!\n"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await proxy.collection.add_toxic("g", {"type": "timeout",
                                               "attributes": {"timeout": 200}})
        writer.write(b"anyone?\n")
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        assert loop.time() - started >= 0.19
        writer.close()
        assert named.toxic_counters["timeout_downstream"].closed == 1


async def passed_through(seed: int, port: int) -> set[int]:
    """Which of 200 datagrams a 50 % loss toxic let through, under ``seed``."""
    loop = asyncio.get_running_loop()
    async with toxiproxy(seed) as proxy:
        named = await create(proxy, name="lossy", upstream=f"127.0.0.1:{port}",
                             protocol="udp")
        await proxy.collection.add_toxic("lossy", {"type": "loss", "stream": "upstream",
                                                   "toxicity": 0.5})
        answered: set[int] = set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for index in range(200):
                await loop.sock_sendto(sock, b"%d" % index, ("127.0.0.1", port_of(named)))
            with contextlib.suppress(TimeoutError):
                while True:
                    async with asyncio.timeout(0.5):
                        reply = await loop.sock_recv(sock, 100)
                    answered.add(int(reply.removeprefix(b"Hello, ").removesuffix(b"!")))
        counters = named.toxic_counters["loss_upstream"]
        assert counters.applied + counters.skipped == 200
        assert counters.dropped == 200 - len(answered)
        return answered


async def test_the_seed_makes_each_proxy_reproducible() -> None:
    async with greeting() as server:
        first = await passed_through(5, server.port)
        second = await passed_through(5, server.port)
        other = await passed_through(6, server.port)
    assert first == second  # the same datagrams, not only as many
    assert other != first
    assert 60 <= len(first) <= 140


async def test_a_disabled_proxy_refuses_tcp_and_drops_udp() -> None:
    async with greeting() as server, toxiproxy() as proxy:
        named = await create(proxy, name="g", upstream=f"127.0.0.1:{server.port}",
                             protocol="both")
        await proxy.collection.update("g", {"enabled": False})
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port_of(named))
        policy = RetryPolicy(timeout=0.2, retries=0)
        async with AsyncClient("127.0.0.1", port_of(named), policy=policy) as client:
            with pytest.raises(RequestTimeout):
                await client.request(b"nobody")
        await proxy.collection.reset()
        async with AsyncClient("127.0.0.1", port_of(named), transport="tcp") as tcp:
            assert await tcp.request(b"back") == b"Hello, back!"
    assert named.direction_counters("up").dropped_disabled == 1


async def test_a_listen_address_in_use_is_a_500() -> None:
    async with toxiproxy() as proxy:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with pytest.raises(ToxicError) as caught:
                await create(proxy, name="x", upstream="127.0.0.1:9",
                             listen=f"127.0.0.1:{taken.getsockname()[1]}")
    assert caught.value.status == 500
    assert "in use" in caught.value.message
    assert not proxy.collection.proxies


async def test_the_go_clients_whole_proxy_bodies_are_taken() -> None:
    """Toxiproxy's Go client posts its whole proxy (``toxics`` too) to create and to
    save; a strict check of unknown fields refused it."""
    async with greeting() as server, toxiproxy() as proxy:
        body = {"name": "g", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{server.port}",
                "enabled": True, "toxics": None}
        named = await proxy.collection.create(proxy_from_json(body))
        listen = named.listen
        await proxy.collection.add_toxic("g", {"type": "latency"})
        saved = {**body, "listen": listen, "enabled": False,
                 "toxics": [t.as_json() for t in named.toxics]}
        await proxy.collection.update("g", saved)
        assert named.listen == listen
        assert named.spec.enabled is False
        assert [t.name for t in named.toxics] == ["latency_downstream"]


async def test_a_proxy_that_cannot_listen_again_says_it_is_disabled() -> None:
    async with toxiproxy() as proxy:
        named = await create(proxy, name="x", upstream="127.0.0.1:9")
        await proxy.collection.update("x", {"enabled": False})
        with socket.socket() as taken:  # someone takes the port meanwhile
            taken.bind(("127.0.0.1", port_of(named)))
            taken.listen()
            with pytest.raises(ToxicError) as caught:
                await proxy.collection.update("x", {"enabled": True})
        assert caught.value.status == 500
        assert named.spec.enabled is False
        await proxy.collection.update("x", {"enabled": True})  # free again
        assert named.spec.enabled is True


async def test_a_named_proxy_counts_the_kernel_s_drops_in_summary_and_metrics() -> None:
    """Regression: datagrams the kernel dropped on a named proxy's full listening socket
    were counted nowhere; now each is read or counted (summary and /metrics)."""
    from udpkit.proxy.toxiproxy_api import metrics_text

    burst = 30_000
    async with greeting() as server, toxiproxy() as proxy:
        named = await create(proxy, name="flooded", protocol="udp",
                             upstream=f"127.0.0.1:{server.port}")
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        try:
            for _ in range(burst):  # the loop does not run meanwhile: nothing is read
                with contextlib.suppress(BlockingIOError):
                    client.sendto(b"x" * 1_000, ("127.0.0.1", port_of(named)))
            async with asyncio.timeout(20):
                while True:
                    summary = named.summary()
                    glue = summary["proxy"]
                    seen = summary["upstream_stream"]["datagrams_received"]  # type: ignore[index]
                    if seen + glue["kernel_drops_up"] == burst:  # type: ignore[index]
                        break
                    await asyncio.sleep(0.02)
        finally:
            client.close()
        drops = glue["kernel_drops_up"]  # type: ignore[index]
        assert drops > 0
        text = metrics_text(proxy.collection)
    assert f'udpkit_proxy_kernel_drops_up_total{{proxy="flooded"}} {drops}' in text
