"""The proxy's life cycle: bind, relay, control, stop, summarise.

Rule: settings live in :class:`~udpkit.proxy.config.ProxyConfig`; this module
owns only the running state, and :class:`~udpkit.service.Service` the order of
the steps and the signals.  One process serves the anonymous proxy of
``--upstream`` (if given) and any number of named proxies of Toxiproxy's API
(:class:`~udpkit.proxy.collection.ProxyCollection`, created from ``--config``
and at run time).  For the anonymous proxy, one
:class:`~udpkit.core.impairment.LinkPolicy` per direction decides for every UDP
session and TCP connection (one link, one seeded stream of decisions).  The
first SIGINT/SIGTERM stops it (relays get 2 s to finish); a second one stops
waiting for them.  The summary (settings, seed and counters) is a JSON object.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sys
from typing import TextIO

from udpkit.capture.writer import PcapRecorder
from udpkit.client.aio import resolve_with_family
from udpkit.core.errors import UsageError
from udpkit.core.handler import Address, format_address
from udpkit.core.impairment import LinkPolicy, LinkSettings, seeded_rng
from udpkit.core.toxics import PolicyStream, ToxicError
from udpkit.http_server import HttpEndpoint
from udpkit.proxy.collection import ProxyCollection
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.control import CONTROL_LIMITS, router
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.stats import GlueCounters, ProxyStats
from udpkit.proxy.tcp import TcpRelay
from udpkit.proxy.udp import UdpRelay, proxy_log
from udpkit.server.binding import bind
from udpkit.service import Service

_RELAY_DRAIN_TIMEOUT = 2.0
"""Seconds a shutdown waits for the cancelled TCP relays to finish."""


class Proxy(Service):
    """A running impairment proxy; ``async with Proxy(config) as proxy: proxy.port``."""

    def __init__(self, config: ProxyConfig) -> None:
        super().__init__()
        self.config = config
        self.seed: int = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
        )
        self._settings = config.impairments
        self.up = LinkPolicy(self._settings.up, rng=seeded_rng(self.seed, "up"))
        self.down = LinkPolicy(self._settings.down, rng=seeded_rng(self.seed, "down"))
        self.counters = GlueCounters()
        self.port: int = config.port
        self.control_port: int | None = None
        self.upstream: Address | None = None
        self._udp: UdpRelay | None = None
        self._delay_line: DelayLine | None = None
        self._tcp_servers: list[asyncio.Server] = []
        self._control: HttpEndpoint | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._collection: ProxyCollection | None = None
        self.recorder: PcapRecorder | None = None
        """``--pcap``: records what every proxy of this process forwards."""

    # -- settings and counters ------------------------------------------------

    @property
    def anonymous(self) -> bool:
        """Whether the ``--upstream`` proxy runs (``config.upstream_port`` is set)."""
        return self.config.upstream_port is not None

    @property
    def collection(self) -> ProxyCollection:
        """The named proxies (Toxiproxy's API)."""
        if self._collection is None:
            raise RuntimeError("the proxy is not running")
        return self._collection

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    def set_settings(self, settings: LinkSettings) -> None:
        """Change the impairments of both directions now (traffic in flight keeps its fate)."""
        self._settings = settings
        self.up.settings = settings.up
        self.down.settings = settings.down

    def stats(self) -> ProxyStats:
        if self._udp is not None:
            self._udp.account_kernel_drops()
        return ProxyStats(
            up=self.up.stats(),
            down=self.down.stats(),
            glue=self.counters.snapshot(),
            sessions_active=len(self._udp.sessions) if self._udp else 0,
            tcp_active=len(self._relays),
        )

    def summary(self) -> dict[str, object]:
        """What ran and what it did, JSON-ready (printed on exit by the CLI)."""
        out: dict[str, object] = {}
        if self.anonymous:
            out = {
                "listen": format_address((self.config.host, self.port)),
                "upstream": format_address(self.upstream) if self.upstream else None,
                "seed": self.seed,
                "impairments": self._settings.as_json(),
                "stats": self.stats().as_json(),
            }
        else:
            out["seed"] = self.seed
        if self._collection is not None and (self._collection.proxies or not self.anonymous):
            out["proxies"] = {proxy.spec.name: proxy.summary() for proxy in self._collection}
        if self.recorder is not None:
            out["pcap"] = {"file": self.recorder.path, "packets": self.recorder.packets}
        return out

    # -- life cycle -----------------------------------------------------------

    async def startup(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        self._delay_line = DelayLine(loop)
        if config.pcap is not None:
            self.recorder = PcapRecorder.open(config.pcap)
        self._collection = ProxyCollection(seed=self.seed, settings=config,
                                           delay_line=self._delay_line, tap=self.recorder)
        try:
            for spec in config.proxies:
                await self._collection.create(spec)
        except ToxicError as exc:
            await self.shutdown()
            raise UsageError(f"proxy {spec.name!r}: {exc.message}") from None
        if config.upstream_port is not None:
            await self._start_anonymous(config.upstream_port)
        elif config.control_port is not None:
            try:
                await self._start_control()
            except BaseException:
                await self.shutdown()
                raise
        if self.anonymous and not self._collection.proxies:
            return
        proxy_log.info(
            "Proxy seed %d: %d named proxies%s", self.seed, len(self._collection.proxies),
            f", API on http://{format_address((config.control_host, self.control_port))}"
            if self.control_port is not None else "",
        )

    async def _start_control(self) -> None:
        config = self.config
        assert config.control_port is not None
        self._control = HttpEndpoint(router(self), name="the control API",
                                     limits=CONTROL_LIMITS, on_error=_log_bug)
        self.control_port = await self._control.start(config.control_host, config.control_port)

    async def _start_anonymous(self, upstream_port: int) -> None:
        config = self.config
        assert self._delay_line is not None
        upstream, family = await resolve_with_family(
            config.upstream_host, upstream_port, socket.SOCK_DGRAM, what="upstream host")
        self.upstream = upstream
        sockets = bind(config.host, config.port, udp=config.udp, tcp=config.tcp)
        self.port = sockets.port
        try:
            if config.control_port is not None:
                await self._start_control()
            if sockets.udp:
                self._udp = UdpRelay(
                    sockets.udp, upstream, family,
                    up=self.up, down=self.down, delay_line=self._delay_line,
                    counters=self.counters, max_sessions=config.max_sessions,
                    idle_timeout=config.idle_timeout, tap=self.recorder,
                )
                self._udp.start()
            for sock in sockets.tcp:
                server = await asyncio.start_server(self._new_connection, sock=sock)
                self._tcp_servers.append(server)
        except BaseException:
            sockets.close()
            await self.shutdown()
            raise
        transports = "/".join(name for name, on in (("UDP", config.udp), ("TCP", config.tcp))
                              if on)
        proxy_log.info(
            "Proxy %s on %s -> %s (seed %d)%s", transports,
            format_address((config.host, self.port)), format_address(upstream), self.seed,
            f", control on http://{format_address((config.control_host, self.control_port))}"
            if self.control_port is not None else "",
        )

    def _new_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback: the relay runs in a task of ours, cancelled on shutdown.
        if len(self._relays) >= self.config.max_connections:
            self.counters.tcp_rejected += 1
            writer.transport.abort()
            return
        self.counters.tcp_opened += 1
        task = asyncio.get_running_loop().create_task(self._relay(reader, writer))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = self.upstream
        assert upstream is not None
        relay = TcpRelay(reader, writer, up=PolicyStream(self.up), down=PolicyStream(self.down),
                         counters=self.counters, tap=self.recorder)
        try:
            await relay.run(
                lambda: asyncio.open_connection(upstream[0], upstream[1]),
                self.config.connect_timeout,
            )
        except Exception as exc:  # a bug: report it, never stop the proxy
            _log_bug(exc)
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()
            self.counters.tcp_closed += 1

    async def shutdown(self) -> None:
        for server in self._tcp_servers:
            server.close()
        if self._control is not None:
            self._control.close()
        if self._udp is not None:
            self._udp.close()
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await self.wait_or_force(asyncio.wait(list(self._relays)), _RELAY_DRAIN_TIMEOUT)
        if self._collection is not None:
            await self._collection.close()
        if self._delay_line is not None:
            self._delay_line.close()
        for server in self._tcp_servers:
            await self.wait_or_force(server.wait_closed(), 1.0)
        if self._control is not None:
            await self.wait_or_force(self._control.wait_closed(), 1.0)
        self._tcp_servers.clear()
        self._control = None
        if self.recorder is not None:
            self.recorder.close()

    def signal_received(self, signal_name: str, *, again: bool) -> None:
        proxy_log.info("Received %s, shutting down...", signal_name)


def _log_bug(exc: BaseException) -> None:
    proxy_log.error("internal error (the proxy keeps running)", exc_info=exc)


def run_proxy(config: ProxyConfig, *, out: TextIO | None = None) -> ProxyStats:
    """Run until SIGINT/SIGTERM, then print the JSON summary (``udpkit proxy``)."""
    proxy = Proxy(config)
    asyncio.run(proxy.serve())
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(proxy.summary(), indent=2) + "\n")
    stream.flush()
    return proxy.stats()
