"""Tier (b): the sans-IO client core through the in-memory fake network.

The router runs the same impairment policy as the proxy; the client's own
counters must agree exactly with what the router did.
"""

from __future__ import annotations

import random

import pytest

from tests.binomial import assert_binomial
from udpkit.apps import REPLY_RULES
from udpkit.apps.greeting import greet
from udpkit.core.exchange import Answered, DatagramClientCore, Failed
from udpkit.core.impairment import GilbertElliott, Impairments
from udpkit.core.retry import RetryPolicy
from udpkit.testing.fake_net import Datagram, FakeEndpoint, FakeNetwork, ManualClock

SERVER = ("10.0.0.100", 9999)
CLIENT = ("10.0.0.1", 40000)


class Greeter:
    """A greeting server on the fake net that counts what it got."""

    def __init__(self, net: FakeNetwork) -> None:
        self.received = 0
        self.endpoint = net.endpoint(SERVER, handler=self.on_datagram)

    def on_datagram(self, datagram: Datagram, endpoint: FakeEndpoint) -> None:
        self.received += 1
        endpoint.send(greet(datagram.data), datagram.source)


def drive(
    net: FakeNetwork, core: DatagramClientCore, client: FakeEndpoint, names: list[bytes], *,
    spacing: float = 0.001,
) -> list[Answered | Failed]:
    """Start one request every ``spacing`` seconds and run until all are done."""
    clock = net.clock
    assert isinstance(clock, ManualClock)
    events: list[Answered | Failed] = []

    def flush() -> None:
        for datagram in core.datagrams_to_send():
            client.send(datagram, SERVER)
        while (event := core.next_event()) is not None:
            events.append(event)

    def on_reply(datagram: Datagram, endpoint: FakeEndpoint) -> None:
        core.receive_datagram(datagram.data, datagram.source, now=clock.now)
        flush()

    client.handler = on_reply
    starts = [i * spacing for i in range(len(names))]
    pending = list(zip(starts, names, strict=True))
    while pending or core.in_flight() or net.in_flight():
        candidates = [t for t in (net.next_delivery(), core.get_timer(),
                                  pending[0][0] if pending else None) if t is not None]
        when = min(candidates)
        net.run(until=when)
        while pending and pending[0][0] <= clock.now:
            core.request(pending.pop(0)[1], now=clock.now)
        core.handle_timer(clock.now)
        flush()
    return events


def make(seed: int, up: Impairments, down: Impairments,
         policy: RetryPolicy) -> tuple[FakeNetwork, Greeter, FakeEndpoint, DatagramClientCore]:
    net = FakeNetwork(seed=seed)
    greeter = Greeter(net)
    client = net.endpoint(CLIENT)
    net.link(CLIENT, SERVER, up=up, down=down)
    core = DatagramClientCore(server=SERVER, matcher=REPLY_RULES["greeting"], policy=policy,
                              rng=random.Random(seed))
    return net, greeter, client, core


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_client_counters_match_what_the_router_did(seed: int) -> None:
    up = Impairments(loss=0.1, duplicate=0.05, reorder=0.1, delay=0.01, jitter=0.005)
    down = Impairments(loss=0.1, duplicate=0.05, reorder=0.1, delay=0.01, jitter=0.005)
    net, greeter, client, core = make(seed, up, down, RetryPolicy(timeout=2.0, retries=3))
    names = [f"name-{i}".encode() for i in range(2000)]
    events = drive(net, core, client, names)
    stats = core.stats()
    to_server, to_client = net.stats(CLIENT, SERVER), net.stats(SERVER, CLIENT)

    assert len(events) == stats.requests == len(names)
    assert stats.answered + stats.timeouts == len(names)
    # Every datagram the client sent entered the router; the server got each copy.
    assert stats.transmissions == to_server.received == client.sent
    assert greeter.received == to_server.forwarded + to_server.duplicated
    assert to_client.received == greeter.received
    # Every copy the router delivered to the client was counted exactly once.
    delivered = to_client.forwarded + to_client.duplicated
    assert delivered == client.received
    assert delivered == stats.answered + stats.duplicates + stats.late + stats.unexpected
    assert stats.unexpected == 0
    assert stats.stray == 0
    assert net.unroutable == 0
    # Retries hide the loss: a request fails only when all 4 round trips do.
    assert stats.answered >= 0.995 * len(names)
    assert_binomial(to_server.dropped_loss, to_server.received, 0.1, what="loss up")
    assert_binomial(to_client.duplicated, to_client.forwarded, 0.05, what="duplicates down")


def test_same_seed_same_run() -> None:
    up = Impairments(loss=0.2, duplicate=0.1, jitter=0.01, delay=0.02)
    results = []
    for _ in range(2):
        net, _greeter, client, core = make(5, up, up, RetryPolicy(timeout=1.0, retries=2))
        events = drive(net, core, client, [f"n{i}".encode() for i in range(300)])
        results.append(([type(e).__name__ for e in events], core.stats(),
                         net.stats(CLIENT, SERVER), net.stats(SERVER, CLIENT)))
    assert results[0] == results[1]


def test_without_retries_the_loss_shows_exactly() -> None:
    """No retries: a request fails exactly when its request or its reply was lost."""
    net, _greeter, client, core = make(
        9, Impairments(loss=0.1), Impairments(loss=0.1), RetryPolicy(timeout=0.5, retries=0))
    events = drive(net, core, client, [f"n{i}".encode() for i in range(3000)])
    stats = core.stats()
    to_server, to_client = net.stats(CLIENT, SERVER), net.stats(SERVER, CLIENT)
    assert stats.transmissions == 3000
    assert stats.retransmissions == 0
    assert stats.timeouts == to_server.dropped + to_client.dropped
    assert sum(isinstance(e, Failed) for e in events) == stats.timeouts
    assert_binomial(stats.timeouts, 3000, 1 - 0.9 * 0.9, what="failed requests")


def test_reordering_shows_in_the_reply_order() -> None:
    net, _greeter, client, core = make(
        3, Impairments(reorder=0.1, reorder_gap=0.05), Impairments(),
        RetryPolicy(timeout=1.0, retries=0))
    names = [f"{i}".encode() for i in range(2000)]
    events = drive(net, core, client, names, spacing=0.001)
    order = [int(e.request) for e in events if isinstance(e, Answered)]
    assert sorted(order) == list(range(2000))
    highest, overtaken = -1, 0
    for seq in order:
        if seq < highest:
            overtaken += 1
        highest = max(highest, seq)
    # Held back 50 ms while one request leaves every 1 ms: every held one is overtaken.
    assert overtaken == net.stats(CLIENT, SERVER).reordered
    assert_binomial(overtaken, 2000, 0.1, what="reordered")


def test_burst_loss_through_the_fake_net() -> None:
    model = GilbertElliott(p=0.02, r=0.2)
    net, _greeter, client, core = make(
        4, Impairments(burst_loss=model), Impairments(), RetryPolicy(timeout=0.5, retries=0))
    drive(net, core, client, [f"n{i}".encode() for i in range(5000)])
    assert core.stats().timeouts == net.stats(CLIENT, SERVER).dropped_burst
    assert abs(core.stats().timeouts / 5000 - model.mean_loss) < 0.04


def test_fixture_fake_net_duplicates(fake_net: FakeNetwork) -> None:
    a, b = fake_net.endpoint(), fake_net.endpoint()
    fake_net.link(a.address, b.address, up=Impairments(duplicate=1.0, delay=0.1))
    a.send(b"x", b.address)
    assert fake_net.advance(0.05) == 0
    assert fake_net.advance(0.05) == 2
    got = b.receive_all()
    assert [d.data for d in got] == [b"x", b"x"]
    assert [d.duplicate for d in got] == [False, True]
    assert got[0].delivered_at == pytest.approx(0.1)


def test_unbound_destination_is_counted(fake_net: FakeNetwork) -> None:
    a = fake_net.endpoint()
    a.send(b"x", ("10.9.9.9", 1))
    fake_net.run()
    assert fake_net.unroutable == 1


async def test_the_asyncio_clock_delivers_by_itself() -> None:
    net = FakeNetwork.for_asyncio(seed=0, impairments=Impairments(delay=0.02))
    a, b = net.endpoint(), net.endpoint()
    a.send(b"hello", b.address)
    datagram = await b.recv()
    assert datagram.data == b"hello"
    assert datagram.delivered_at - datagram.sent_at == pytest.approx(0.02)
    net.close()
