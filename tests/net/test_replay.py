"""Tier (c): ``bench --replay`` and ``proxy --pcap`` on real loopback sockets.

A capture built in memory is replayed against a server; the proxy records what
it forwards, and that file is replayed against a fresh server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.capture_files import conversation, pcap_file
from udpkit import AsyncClient, Server, ServerConfig
from udpkit.bench.replay import ReplayConfig, ReplayResult, load, replay_async
from udpkit.capture import read_capture_untrusted
from udpkit.capture.reader import LINKTYPE_ETHERNET
from udpkit.proxy import Proxy, ProxyConfig

NAMES = (b"Michael", b"Tracy", b"Sarah", b"Ann", b"Bob")


async def replay(config: ReplayConfig) -> ReplayResult:
    plan, source = load(config)
    async with asyncio.timeout(20):
        return await replay_async(config, plan, source)


async def test_a_capture_replayed_against_a_server(server: Server, loopback: str,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "greetings.pcap"
    path.write_bytes(pcap_file(LINKTYPE_ETHERNET, conversation(host=loopback, names=NAMES)))
    config = ReplayConfig(path=str(path), host=loopback, port=server.port, replay_port=9999,
                          expect="greeting", speed=2.0)
    replayed = await replay(config)
    result = replayed.result
    assert (result.sent, result.received, result.lost, result.wrong) == (5, 5, 0, 0)
    assert replayed.source.requests == 5
    assert replayed.source.other_datagrams == 5  # the recorded replies, not sent
    assert server.stats()["udp"].replied == 5
    document = replayed.as_dict()
    assert document["mode"] == "replay"
    assert document["replay"]["port"] == 9999


async def test_an_unanswered_request_is_lost_and_order_pairs_the_others(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    # An empty datagram is no request: the server drops it (counted) and never replies.
    path.write_bytes(pcap_file(LINKTYPE_ETHERNET, conversation(names=(b"a", b"", b"c"))))
    async with Server(ServerConfig(host="127.0.0.1", port=0, app="echo", tcp=False)) as echo:
        replayed = await replay(ReplayConfig(path=str(path), port=echo.port, replay_port=9999,
                                             speed=None, timeout=0.3))
    result = replayed.result
    assert (result.sent, result.received, result.lost, result.wrong) == (3, 2, 1, 0)
    assert replayed.as_dict()["config"]["expect"] == "order"


async def test_the_proxy_records_both_ways_and_the_record_replays(tmp_path: Path) -> None:
    record = tmp_path / "proxy.pcap"
    async with Server(ServerConfig(host="127.0.0.1", port=0)) as upstream:
        config = ProxyConfig(upstream_host="127.0.0.1", upstream_port=upstream.port,
                             host="127.0.0.1", port=0, seed=1, pcap=str(record))
        async with Proxy(config) as proxy:
            async with AsyncClient("127.0.0.1", proxy.port) as udp:
                for name in NAMES[:3]:
                    assert await udp.request(name) == b"Hello, " + name + b"!"
            async with AsyncClient("127.0.0.1", proxy.port, transport="tcp") as tcp:
                assert await tcp.request(b"Tracy") == b"Hello, Tracy!"
            async with asyncio.timeout(10):  # the relay ends once both sides have closed
                while proxy.stats().tcp_active:
                    await asyncio.sleep(0.01)
            port = proxy.port
            summary = proxy.summary()
    capture = read_capture_untrusted(record)
    to_proxy = [d for d in capture.datagrams if d.destination == ("127.0.0.1", port)]
    from_proxy = [d for d in capture.datagrams if d.source == ("127.0.0.1", port)]
    assert [d.payload for d in to_proxy] == list(NAMES[:3])
    assert [d.payload for d in from_proxy] == [b"Hello, " + n + b"!" for n in NAMES[:3]]
    # The TCP connection: handshake, the data both ways, two FINs and the last ACK.
    assert capture.skipped["not UDP"] >= 3 + 2 + 2 + 1
    assert summary["pcap"] == {"file": str(record), "packets": capture.packets}

    async with Server(ServerConfig(host="127.0.0.1", port=0)) as fresh:
        replayed = await replay(ReplayConfig(path=str(record), port=fresh.port,
                                             replay_port=port, expect="greeting"))
        assert (replayed.result.sent, replayed.result.received) == (3, 3)
        assert fresh.stats()["udp"].replied == 3


async def test_what_the_proxy_drops_is_what_the_replay_counts_lost(tmp_path: Path) -> None:
    """The replay's accounts against the proxy's own: each request the proxy dropped on
    its way up is one lost, each duplicate it made of a reply one duplicate; exactly."""
    from udpkit.core.impairment import Impairments, LinkSettings

    names = tuple(b"n%d" % index for index in range(200))
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_file(LINKTYPE_ETHERNET, conversation(names=names, gap=0.0005)))
    async with Server(ServerConfig(host="127.0.0.1", port=0, tcp=False)) as upstream:
        config = ProxyConfig(upstream_host="127.0.0.1", upstream_port=upstream.port,
                             host="127.0.0.1", port=0, seed=7, tcp=False,
                             impairments=LinkSettings(up=Impairments(loss=0.2),
                                                      down=Impairments(duplicate=0.1)))
        async with Proxy(config) as proxy:
            replayed = await replay(ReplayConfig(path=str(path), port=proxy.port,
                                                 replay_port=9999, expect="greeting",
                                                 speed=None, concurrency=64, timeout=1.5))
            stats = proxy.stats()
    result = replayed.result
    assert result.sent == 200
    assert result.sent == result.received + result.lost
    assert result.lost == stats.up.dropped > 0
    assert result.duplicates == stats.down.duplicated > 0
    assert result.wrong == result.late == 0
