"""Tier (c): ``serve dns`` in-process on loopback: UDP and len16 TCP on one port, and
response-rate limiting as a flood from one source sees it, counted exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from tests.dns_zone import write_zone
from udpkit.server import Server, ServerConfig


def _config(zone: Path, **options: str) -> ServerConfig:
    """Only the app and its zone: the app's own defaults (len16 over TCP, no
    amplification cap) are the library's to apply, not the caller's."""
    return ServerConfig(app="dns", app_options={"zone": str(zone), **options}, port=0)


async def test_udp_and_tcp_on_one_port_give_the_same_answer(tmp_path: Path) -> None:
    async with Server(_config(write_zone(tmp_path))) as server:
        query = dns.message.make_query("www.example.com.", "A")
        over_udp = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", 5, server.port)
        over_tcp = await asyncio.to_thread(dns.query.tcp, query, "127.0.0.1", 5, server.port)
        stats = server.stats()
    assert over_udp.answer == over_tcp.answer
    assert len(over_udp.answer) == 2
    assert (stats["udp"].replied, stats["tcp"].replied) == (1, 1)


async def test_a_large_answer_goes_out_over_udp_without_an_amplification_cap(
        tmp_path: Path) -> None:
    """A library server with ``app="dns"`` takes the app's defaults: an answer many
    times its query is sent, not dropped as amplification."""
    async with Server(_config(write_zone(tmp_path))) as server:
        query = dns.message.make_query("big.example.com.", "TXT", use_edns=0, payload=4096)
        answer = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", 5, server.port)
        stats = server.stats()["udp"]
    assert len(answer.to_wire()) > 10 * len(query.to_wire())
    assert (stats.replied, stats.dropped_amplification) == (1, 0)


def _flood(port: int, count: int) -> list[bytes]:
    """``count`` identical queries at once from one socket; the answers that come."""
    query = dns.message.make_query("example.com.", "A", use_edns=0).to_wire()
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for _ in range(count):
            sock.sendto(query, ("127.0.0.1", port))
        try:
            while True:
                answers.append(sock.recv(4096))
        except TimeoutError:
            pass
    return answers


@pytest.mark.timeout(30)
async def test_rrl_sends_the_rate_truncates_every_second_extra_and_drops_the_rest(
        tmp_path: Path) -> None:
    config = _config(write_zone(tmp_path), **{"rrl-rate": "2", "rrl-slip": "2"})
    async with Server(config) as server:
        answers = await asyncio.to_thread(_flood, server.port, 40)
        query = dns.message.make_query("example.com.", "A")
        over_tcp = await asyncio.to_thread(dns.query.tcp, query, "127.0.0.1", 5, server.port)
        stats = server.stats()["udp"]
    messages = [dns.message.from_wire(answer) for answer in answers]
    full = [message for message in messages if message.answer]
    slipped = [message for message in messages if message.flags & dns.flags.TC]
    assert 2 <= len(full) <= 6  # the burst, and the rate over the few seconds of the run
    assert len(full) + len(slipped) == len(messages)
    assert abs(len(slipped) - (40 - len(full)) / 2) <= 1  # every second answer over the limit
    assert all(message.answer == [] for message in slipped)
    assert stats.received == 40
    assert stats.replied == len(messages)
    assert stats.no_reply == 40 - len(messages)  # the dropped ones, each counted
    assert over_tcp.answer  # TCP is not limited: a truncated client gets its answer there


async def test_the_client_matches_dns_answers(tmp_path: Path) -> None:
    from udpkit import AsyncClient
    from udpkit.core.dns_wire import encode_query, question_from_line

    query = encode_query(77, question_from_line("example.com MX"))
    async with Server(_config(write_zone(tmp_path))) as server, AsyncClient(
            "127.0.0.1", server.port, matcher="dns") as client:
        reply = await client.request(query)
    answer = dns.message.from_wire(reply)
    assert answer.id == 77
    assert "10 mail.example.com." in answer.answer[0].to_text()


async def test_the_apps_tally_is_in_the_summary_and_in_metrics(tmp_path: Path) -> None:
    """Issue 17: the dns app's own outcomes (formerr, refused, rrl_*...) went to the
    log at shutdown only; a scrape shows them, each from zero, and so does the summary."""
    import urllib.request

    config = dataclasses.replace(_config(write_zone(tmp_path)), metrics=("127.0.0.1", 0))

    def exchange(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            for _ in range(2):  # two questions: FORMERR
                sock.sendto(b"\x12\x34\x00\x00\x00\x02" + bytes(6), ("127.0.0.1", port))
                assert sock.recv(512)[3] & 0x0F == 1
            chaos = dns.message.make_query("version.bind.", "TXT", "CH").to_wire()
            sock.sendto(chaos, ("127.0.0.1", port))
            assert sock.recv(512)[3] & 0x0F == 5  # REFUSED

    async with Server(config) as server:
        await asyncio.to_thread(exchange, server.port)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
                ).decode()
        summary = server.summary()
        tally = server.handler_outcomes()
    assert 'udpkit_handler_outcomes_total{outcome="formerr"} 2.0' in text
    assert 'udpkit_handler_outcomes_total{outcome="refused"} 1.0' in text
    assert 'udpkit_handler_outcomes_total{outcome="rrl_drop"} 0.0' in text
    assert (tally["formerr"], tally["refused"], tally["notimp"]) == (2, 1, 0)
    assert "; handler(short=0 response=0 notimp=0 formerr=2 badvers=0 refused=1 " in summary
