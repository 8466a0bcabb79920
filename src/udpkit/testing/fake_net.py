"""An in-memory datagram network whose router runs the impairment policy.

Rule: the same :class:`~udpkit.core.impairment.LinkPolicy` as the proxy
decides every datagram's fate, so "10 % loss" means the same thing here and on
real sockets; and every route's decisions come from a generator seeded with
``(seed, source, destination)``, so a test is the same on every run.

Two clocks:

* hand-driven (the default, :class:`ManualClock`): nothing moves until the
  test calls :meth:`FakeNetwork.advance` or :meth:`FakeNetwork.run`, which step
  from one delivery to the next (aioquic's and h11's way of testing);
* asyncio (:meth:`FakeNetwork.for_asyncio`): deliveries happen on the running
  loop at ``loop.time()`` and endpoints offer ``await endpoint.recv()``.

Example::

    net = FakeNetwork(seed=1)
    server = net.endpoint(("10.0.0.1", 9999), handler=lambda d, ep: ep.send(d.data, d.source))
    client = net.endpoint()
    net.link(client.address, server.address, up=Impairments(loss=0.5))
    client.send(b"ping", server.address)
    net.run()
    client.receive_all()          # [] or [Datagram(b"ping", ...)]
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from udpkit.core.impairment import NO_IMPAIRMENTS, Impairments, LinkPolicy, LinkStats, seeded_rng
from udpkit.timer import DeadlineTimer

FakeAddress = tuple[str, int]
Clock = Callable[[], float]


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.now += seconds

    def set(self, when: float) -> None:
        self.now = max(self.now, when)


@dataclass(frozen=True, slots=True)
class Datagram:
    """A datagram as an endpoint receives it."""

    data: bytes
    source: FakeAddress
    destination: FakeAddress
    sent_at: float
    delivered_at: float
    duplicate: bool = False
    """The extra copy of a duplicated datagram (the router knows; a real receiver would not)."""


DatagramHandler = Callable[[Datagram, "FakeEndpoint"], None]


class FakeEndpoint:
    """A bound datagram socket on the fake network."""

    def __init__(
        self, network: FakeNetwork, address: FakeAddress, handler: DatagramHandler | None
    ) -> None:
        self.network = network
        self.address = address
        self.handler = handler
        """Called with each datagram at its delivery time, instead of queueing it."""
        self.inbox: deque[Datagram] = deque()
        self.sent = 0
        self.received = 0
        self._waiter: asyncio.Future[None] | None = None

    def send(self, data: bytes, destination: FakeAddress) -> None:
        self.sent += 1
        self.network.route(bytes(data), self.address, destination)

    def receive(self) -> Datagram | None:
        """The oldest datagram waiting, or ``None``."""
        return self.inbox.popleft() if self.inbox else None

    def receive_all(self) -> list[Datagram]:
        out = list(self.inbox)
        self.inbox.clear()
        return out

    async def recv(self) -> Datagram:
        """Wait for the next datagram (asyncio clock only)."""
        while not self.inbox:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.inbox.popleft()

    def close(self) -> None:
        self.network.unbind(self.address)

    def _deliver(self, datagram: Datagram) -> None:
        self.received += 1
        if self.handler is not None:
            self.handler(datagram, self)
            return
        self.inbox.append(datagram)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class FakeNetwork:
    """Endpoints and a router between them; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int | str = 0,
        impairments: Impairments = NO_IMPAIRMENTS,
        clock: Clock | None = None,
    ) -> None:
        self.seed = seed
        self.default = impairments
        """Settings of every route not configured by :meth:`link` or :meth:`impair`."""
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.unroutable = 0
        """Datagrams sent to an address nobody has bound (dropped, like ICMP-less UDP)."""
        self._endpoints: dict[FakeAddress, FakeEndpoint] = {}
        self._settings: dict[tuple[FakeAddress, FakeAddress], Impairments] = {}
        self._policies: dict[tuple[FakeAddress, FakeAddress], LinkPolicy] = {}
        self._in_flight: list[tuple[float, int, Datagram]] = []
        self._order = itertools.count()
        self._next_host = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: DeadlineTimer | None = None

    @classmethod
    def for_asyncio(
        cls, *, seed: int | str = 0, impairments: Impairments = NO_IMPAIRMENTS
    ) -> FakeNetwork:
        """A network on the running loop's clock that delivers by itself."""
        loop = asyncio.get_running_loop()
        network = cls(seed=seed, impairments=impairments, clock=loop.time)
        network._loop = loop
        return network

    # -- topology -------------------------------------------------------------

    def endpoint(
        self, address: FakeAddress | None = None, *, handler: DatagramHandler | None = None
    ) -> FakeEndpoint:
        """Bind an endpoint (a fresh ``10.0.0.N:40000`` address if none is given)."""
        if address is None:
            address = (f"10.0.0.{next(self._next_host)}", 40000)
            while address in self._endpoints:
                address = (f"10.0.0.{next(self._next_host)}", 40000)
        if address in self._endpoints:
            raise ValueError(f"address {address} is already bound")
        endpoint = FakeEndpoint(self, address, handler)
        self._endpoints[address] = endpoint
        return endpoint

    def unbind(self, address: FakeAddress) -> None:
        self._endpoints.pop(address, None)

    def link(
        self,
        client: FakeAddress,
        server: FakeAddress,
        *,
        up: Impairments = NO_IMPAIRMENTS,
        down: Impairments = NO_IMPAIRMENTS,
    ) -> None:
        """Impair ``client -> server`` with ``up`` and ``server -> client`` with ``down``.

        May be called again at any time; the routes' state and counters carry on.
        """
        self.impair(client, server, up)
        self.impair(server, client, down)

    def impair(self, source: FakeAddress, destination: FakeAddress, settings: Impairments) -> None:
        """Set the impairments of the one-way route ``source -> destination``."""
        key = (source, destination)
        self._settings[key] = settings
        if key in self._policies:
            self._policies[key].settings = settings

    def policy(self, source: FakeAddress, destination: FakeAddress) -> LinkPolicy:
        """The policy deciding ``source -> destination`` (created on first use)."""
        key = (source, destination)
        policy = self._policies.get(key)
        if policy is None:
            rng = seeded_rng(self.seed, _label(source), _label(destination))
            policy = LinkPolicy(self._settings.get(key, self.default), rng=rng)
            self._policies[key] = policy
        return policy

    def stats(self, source: FakeAddress, destination: FakeAddress) -> LinkStats:
        """What the router did on ``source -> destination`` so far."""
        policy = self._policies.get((source, destination))
        return policy.stats() if policy is not None else LinkStats()

    # -- the router -------------------------------------------------------------

    def route(self, data: bytes, source: FakeAddress, destination: FakeAddress) -> None:
        """Take a datagram from ``source``; the policy decides when it arrives, if ever."""
        now = self.clock()
        decision = self.policy(source, destination).decide(data, now)
        for delivery in decision.deliveries:
            datagram = Datagram(
                delivery.data, source, destination, now, delivery.at, delivery.duplicate
            )
            heapq.heappush(self._in_flight, (delivery.at, next(self._order), datagram))
        self._arm_timer()

    def in_flight(self) -> int:
        """Datagrams on their way."""
        return len(self._in_flight)

    def next_delivery(self) -> float | None:
        """When the next datagram arrives, or ``None``."""
        return self._in_flight[0][0] if self._in_flight else None

    def deliver_due(self, now: float | None = None) -> int:
        """Hand over every datagram due by ``now`` (the clock's), in time order."""
        delivered = 0
        now = self.clock() if now is None else max(now, self.clock())
        while self._in_flight and self._in_flight[0][0] <= now:
            _, _, datagram = heapq.heappop(self._in_flight)
            endpoint = self._endpoints.get(datagram.destination)
            if endpoint is None:
                self.unroutable += 1
                continue
            endpoint._deliver(datagram)
            delivered += 1
        self._arm_timer()
        return delivered

    # -- the hand-driven clock ------------------------------------------------

    def advance(self, seconds: float) -> int:
        """Move a :class:`ManualClock` ``seconds`` on, delivering on the way."""
        clock = self._manual_clock()
        return self.run(until=clock.now + seconds)

    def run(self, *, until: float | None = None, max_deliveries: int = 1_000_000) -> int:
        """Deliver datagrams one time step at a time, until ``until`` or until none is left.

        The clock ends at ``until`` when given, else at the last delivery.
        """
        clock = self._manual_clock()
        delivered = 0
        while delivered < max_deliveries:
            when = self.next_delivery()
            if when is None or (until is not None and when > until):
                break
            clock.set(when)
            delivered += self.deliver_due()
        if until is not None:
            clock.set(until)
        return delivered

    def _manual_clock(self) -> ManualClock:
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() and run() need the hand-driven ManualClock")
        return self.clock

    # -- the asyncio clock -------------------------------------------------------

    def _arm_timer(self) -> None:
        if self._loop is None:
            return
        if self._timer is None:
            self._timer = DeadlineTimer(self._loop, self.deliver_due)
        self._timer.arm(self.next_delivery())

    def close(self) -> None:
        """Stop the asyncio timer and forget what is in flight."""
        if self._timer is not None:
            self._timer.cancel()
        self._in_flight.clear()


def _label(address: FakeAddress) -> str:
    return f"{address[0]}:{address[1]}"
