"""The proxy's life cycle: bind, relay, control, stop, summarise.

Rule: settings live in :class:`~udpkit.proxy.config.ProxyConfig`; this module
owns only the running state.  One :class:`~udpkit.core.impairment.LinkPolicy`
per direction decides for every UDP session and TCP connection (one link, one
seeded stream of decisions).  The first SIGINT/SIGTERM stops it; the summary
(settings, seed and counters) is a JSON object.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sys
from types import TracebackType
from typing import TextIO

from udpkit.core.errors import UsageError
from udpkit.core.handler import Address, format_address
from udpkit.core.impairment import LinkPolicy, LinkSettings, seeded_rng
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.control import MAX_HEAD, handle_connection
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.stats import Counters, ProxyStats
from udpkit.proxy.tcp import TcpRelay
from udpkit.proxy.udp import UdpRelay, proxy_log
from udpkit.server.binding import bind
from udpkit.signals import StopSignals


class Proxy:
    """A running impairment proxy; ``async with Proxy(config) as proxy: proxy.port``."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.seed: int = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
        )
        self._settings = config.impairments
        self.up = LinkPolicy(self._settings.up, rng=seeded_rng(self.seed, "up"))
        self.down = LinkPolicy(self._settings.down, rng=seeded_rng(self.seed, "down"))
        self.counters = Counters()
        self.port: int = config.port
        self.control_port: int | None = None
        self.upstream: Address | None = None
        self._udp: UdpRelay | None = None
        self._delay_line: DelayLine | None = None
        self._tcp_servers: list[asyncio.Server] = []
        self._control: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._should_exit = asyncio.Event()

    # -- settings and counters ------------------------------------------------

    @property
    def settings(self) -> LinkSettings:
        return self._settings

    def set_settings(self, settings: LinkSettings) -> None:
        """Change the impairments of both directions now (traffic in flight keeps its fate)."""
        self._settings = settings
        self.up.settings = settings.up
        self.down.settings = settings.down

    def stats(self) -> ProxyStats:
        return ProxyStats(
            up=self.up.stats(),
            down=self.down.stats(),
            glue=self.counters.snapshot(),
            sessions_active=len(self._udp.sessions) if self._udp else 0,
            tcp_active=len(self._relays),
        )

    def summary(self) -> dict[str, object]:
        """What ran and what it did, JSON-ready (printed on exit by the CLI)."""
        return {
            "listen": format_address((self.config.host, self.port)),
            "upstream": format_address(self.upstream) if self.upstream else None,
            "seed": self.seed,
            "impairments": self._settings.as_json(),
            "stats": self.stats().as_json(),
        }

    # -- life cycle -----------------------------------------------------------

    async def startup(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        upstream, family = await _resolve(config.upstream_host, config.upstream_port)
        self.upstream = upstream
        sockets = bind(config.host, config.port, udp=config.udp, tcp=config.tcp)
        self.port = sockets.port
        try:
            if config.control_port is not None:
                try:
                    self._control = await asyncio.start_server(
                        lambda r, w: handle_connection(r, w, self, on_error=_log_bug),
                        config.control_host,
                        config.control_port,
                        limit=MAX_HEAD,
                    )
                except OSError as exc:  # a listener the user named: one line, like bind()
                    where = format_address((config.control_host, config.control_port))
                    raise UsageError(f"cannot serve the control API on {where}: "
                                     f"{exc.strerror or exc}") from None
                self.control_port = self._control.sockets[0].getsockname()[1]
            self._delay_line = DelayLine(loop)
            if sockets.udp:
                self._udp = UdpRelay(
                    sockets.udp, upstream, family,
                    up=self.up, down=self.down, delay_line=self._delay_line,
                    counters=self.counters, max_sessions=config.max_sessions,
                    idle_timeout=config.idle_timeout,
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
        relay = TcpRelay(reader, writer, up=self.up, down=self.down, counters=self.counters)
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

    async def main_loop(self) -> None:
        await self._should_exit.wait()

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
            await asyncio.wait(list(self._relays), timeout=2.0)
        if self._delay_line is not None:
            self._delay_line.close()
        for server in (*self._tcp_servers, *([self._control] if self._control else [])):
            try:
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
            except TimeoutError:
                pass
        self._tcp_servers.clear()
        self._control = None

    def request_exit(self) -> None:
        self._should_exit.set()

    async def serve(self, *, install_signals: bool = True) -> None:
        """Start, relay until asked to stop (SIGINT/SIGTERM), shut down.

        The signal handlers go in before start-up: a signal right after the
        ``Proxy ... on ...`` line still ends in a clean shutdown and the summary.
        """
        stop = self._stop
        with StopSignals(stop, stop, install=install_signals):
            await self.startup()
            try:
                await self.main_loop()
            finally:
                await self.shutdown()

    def _stop(self, signal_name: str) -> None:
        # Shutdown is bounded already (relays get 2 s), so a second signal asks the same.
        proxy_log.info("Received %s, shutting down...", signal_name)
        self.request_exit()

    async def __aenter__(self) -> Proxy:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


async def _resolve(host: str, port: int) -> tuple[Address, socket.AddressFamily]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve upstream host {host!r}: {exc.strerror}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return (str(sockaddr[0]), int(sockaddr[1])), family
    raise UsageError(f"upstream host {host!r} has no IPv4 or IPv6 address")


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
