"""udpkit's pytest plugin: the ``udp_proxy`` and ``fake_net`` fixtures.

Rule: loaded by every pytest run where udpkit is installed (entry point
``pytest11``), so it imports only pytest and udpkit and registers nothing
but two fixtures; the proxy runs on its own thread, so the fixtures work in
synchronous tests and without pytest-asyncio.

    def test_survives_loss(udp_proxy):
        proxy = udp_proxy(("127.0.0.1", 9999), up=Impairments(loss=0.1), seed=1)
        with Client(*proxy.address) as client:
            assert client.request(b"Michael") == b"Hello, Michael!"

    def test_two_named_proxies(udp_proxy):
        proxies = udp_proxy.named(
            {"name": "dns", "upstream": "127.0.0.1:5353", "protocol": "udp",
             "toxics": [{"type": "latency", "attributes": {"latency": 100}}]},
            {"name": "db", "upstream": "127.0.0.1:5432"})
        host, port = proxies.address_of("dns")

    def test_on_the_fake_net(fake_net):
        a, b = fake_net.endpoint(), fake_net.endpoint()
        fake_net.link(a.address, b.address, up=Impairments(duplicate=1.0))
        a.send(b"x", b.address)
        fake_net.run()
        assert len(b.receive_all()) == 2
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import pytest

from udpkit.core.errors import UsageError
from udpkit.core.impairment import NO_IMPAIRMENTS, Impairments, LinkSettings
from udpkit.core.toxics import ToxicError
from udpkit.core.toxiproxy import proxies_from_json
from udpkit.proxy.config import ProxyConfig
from udpkit.testing.background import BackgroundProxy
from udpkit.testing.fake_net import FakeNetwork


class ProxyFactory(Protocol):
    def __call__(
        self,
        upstream: tuple[str, int],
        *,
        up: Impairments = ...,
        down: Impairments = ...,
        both: Impairments | None = ...,
        seed: int = ...,
        host: str = ...,
        udp: bool = ...,
        tcp: bool = ...,
        control: bool = ...,
        idle_timeout: float = ...,
    ) -> BackgroundProxy: ...

    def named(self, *proxies: Mapping[str, object], seed: int = ...,
              control: bool = ...) -> BackgroundProxy: ...


class _Factory:
    """``udp_proxy(...)``: one anonymous proxy; ``udp_proxy.named(...)``: named ones."""

    def __init__(self) -> None:
        self.started: list[BackgroundProxy] = []

    def __call__(
        self,
        upstream: tuple[str, int],
        *,
        up: Impairments = NO_IMPAIRMENTS,
        down: Impairments = NO_IMPAIRMENTS,
        both: Impairments | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        udp: bool = True,
        tcp: bool = True,
        control: bool = False,
        idle_timeout: float = 60.0,
    ) -> BackgroundProxy:
        settings = LinkSettings(up=both, down=both) if both is not None else LinkSettings(
            up=up, down=down)
        config = ProxyConfig(
            upstream_host=upstream[0],
            upstream_port=upstream[1],
            host=host,
            port=0,
            impairments=settings,
            seed=seed,
            udp=udp,
            tcp=tcp,
            control_host=host,
            control_port=0 if control else None,
            idle_timeout=idle_timeout,
        )
        return self._start(config)

    def named(self, *proxies: Mapping[str, object], seed: int = 0,
              control: bool = False) -> BackgroundProxy:
        """Several named proxies in one process, each declared as in ``--config``
        (Toxiproxy's fields, ``protocol``, ``toxics``); ``control=True`` also serves
        Toxiproxy's API on a free port (``proxy.control_url``)."""
        try:
            specs = proxies_from_json([dict(p) for p in proxies], allow_toxics=True)
        except ToxicError as exc:
            raise UsageError(f"udp_proxy.named: {exc.message}") from None
        config = ProxyConfig(upstream_port=None, proxies=specs, seed=seed,
                             control_port=0 if control else None)
        return self._start(config)

    def _start(self, config: ProxyConfig) -> BackgroundProxy:
        proxy = BackgroundProxy(config).start()
        self.started.append(proxy)
        return proxy


@pytest.fixture
def udp_proxy() -> Iterator[ProxyFactory]:
    """A factory of impairment proxies in front of a service, closed after the test.

    ``udp_proxy(upstream, up=..., down=..., both=..., seed=0)`` returns a running
    :class:`~udpkit.testing.background.BackgroundProxy` listening on a free port
    of ``host`` (127.0.0.1 by default); change faults with
    ``proxy.set_impairments(...)``, read counters with ``proxy.stats()``.
    ``udp_proxy.named({"name": ..., "upstream": ..., "protocol": "udp", "toxics":
    [...]}, ...)`` runs several named proxies (Toxiproxy's shapes) in one process:
    ``proxies.address_of(name)``, ``proxies.add_toxic(name, {...})``.
    """
    factory = _Factory()
    yield factory
    for proxy in factory.started:
        proxy.close()


@pytest.fixture
def fake_net() -> Iterator[FakeNetwork]:
    """An in-memory network with a hand-driven clock, seeded 0 (see :mod:`.fake_net`)."""
    network = FakeNetwork(seed=0)
    yield network
    network.close()
