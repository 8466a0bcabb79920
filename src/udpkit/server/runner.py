"""The server's life cycle: startup, serving, graceful shutdown, signals.

Rule: settings live in :class:`~udpkit.server.config.ServerConfig`; this
module owns only the running state.  The first SIGINT/SIGTERM stops taking new
work, answers what was already received, closes TCP connections and prints a
one-line summary of the counters; a second signal skips the waiting.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from udpkit.apps import load_app
from udpkit.core.admission import Admission
from udpkit.core.counters import Counters, CounterSnapshot
from udpkit.core.framing import make_framing
from udpkit.core.handler import Handler, format_address
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.proxy_protocol import ProxyProtocolPolicy
from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier, parse_networks
from udpkit.server.binding import BoundSockets, bind
from udpkit.server.config import ServerConfig
from udpkit.server.event_loops import run_with_loop
from udpkit.server.limits import ensure_open_files
from udpkit.server.logs import server_log
from udpkit.server.tcp import (
    TCP_FAST_PATH_NAME,
    TCP_POLLER_NAME,
    ConnectionRegistry,
    TcpConnection,
    TcpSettings,
    tcp_fast_path,
    tcp_line_poller,
)
from udpkit.server.udp import FAST_PATH_NAME, UdpEndpoint
from udpkit.signals import StopSignals

if TYPE_CHECKING:
    from udpkit.server.metrics import MetricsServer

class Server:
    """A running udpkit server; use ``async with Server(config) as server``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.handler: Handler = load_app(config.app) if isinstance(config.app, str) else config.app
        self.udp_counters = Counters()
        self.tcp_counters = Counters()
        self.port: int = config.port
        self.addresses: list[tuple[str, int]] = []
        self._sockets: BoundSockets | None = None
        self.admission = make_admission(config)
        self._udp: list[UdpEndpoint] = []
        self._tcp_servers: list[asyncio.Server] = []
        self._registry: ConnectionRegistry | None = None
        self.latency = LatencyHistogram() if config.metrics is not None else None
        self._metrics: MetricsServer | None = None
        self.metrics_port: int | None = None
        self._should_exit = asyncio.Event()
        self._force_exit = asyncio.Event()

    # -- public state ---------------------------------------------------------

    def stats(self) -> dict[str, CounterSnapshot]:
        """Frozen counters per transport."""
        return {"udp": self.udp_counters.snapshot(), "tcp": self.tcp_counters.snapshot()}

    def summary(self) -> str:
        """``Summary: UDP received=... kernel_drops=N; TCP received=... connections(...)``."""
        return "Summary: " + format_counters(self.stats(), udp=self.config.udp, tcp=self.config.tcp)

    @property
    def open_connections(self) -> int:
        return len(self._registry) if self._registry is not None else 0

    @property
    def _connections(self) -> set[TcpConnection]:
        return self._registry.connections if self._registry is not None else set()

    # -- life cycle -----------------------------------------------------------

    async def startup(self) -> None:
        """Bind and start serving; on failure, release whatever was opened."""
        try:
            await self._start()
        except BaseException:
            await self.shutdown()
            raise

    async def _start(self) -> None:
        config = self.config
        self._sockets = bind(
            config.host,
            config.port,
            udp=config.udp,
            tcp=config.tcp,
            backlog=config.tcp_backlog,
            reuse_port=config.reuse_port,
        )
        self.port = self._sockets.port
        if config.tcp:
            ensure_open_files(config.tcp_max_connections + 64)
            line_reader, refusal = tcp_fast_path(
                self.handler,
                framing=config.tcp_framing,
                enabled=config.fast_path,
                access_log=config.access_log,
            )
            line_poller = tcp_line_poller() if line_reader is not None else None
            if line_poller is not None:
                server_log.info("TCP fast path: %s", TCP_POLLER_NAME)
            elif line_reader is not None:
                server_log.info("TCP fast path: %s", TCP_FAST_PATH_NAME)
            else:
                server_log.info("TCP fast path unavailable (%s): pure Python", refusal)
            self._registry = ConnectionRegistry(
                TcpSettings(
                    handler=self.handler,
                    counters=self.tcp_counters,
                    pipeline=config.tcp_pipeline,
                    access_log=config.access_log,
                    admission=self.admission,
                    max_connections=config.tcp_max_connections,
                    max_per_source=config.tcp_max_per_source,
                    idle_timeout=config.tcp_idle_timeout,
                    line_timeout=config.tcp_line_timeout,
                    write_timeout=config.tcp_write_timeout,
                    write_buffer=config.tcp_write_buffer,
                    latency=self.latency,
                    proxy=make_proxy_policy(config),
                    line_reader=line_reader,
                    line_poller=line_poller,
                )
            )
        loop = asyncio.get_running_loop()
        for sock in self._sockets.udp:
            endpoint = UdpEndpoint(
                sock,
                self.handler,
                self.udp_counters,
                max_request=config.max_request,
                recv_buffer=config.recv_buffer,
                send_queue=config.udp_send_queue,
                access_log=config.access_log,
                admission=self.admission,
                max_amplification=config.max_amplification,
                latency=self.latency,
                fast_path=config.fast_path,
            )
            if not self._udp:
                self._announce_udp_path(endpoint)
            endpoint.start()
            self._udp.append(endpoint)
            self._announce("UDP", sock.getsockname())
        for sock in self._sockets.tcp:
            server = await loop.create_server(
                self._new_connection, sock=sock, backlog=config.tcp_backlog
            )
            self._tcp_servers.append(server)
            self._announce("TCP", sock.getsockname())
        if config.metrics is not None:
            self._start_metrics(*config.metrics)

    def _start_metrics(self, host: str, port: int) -> None:
        from udpkit.server.metrics import ServerCollector, serve_metrics

        assert self.latency is not None
        collector = ServerCollector(self.stats, lambda: self.open_connections, self.latency)
        self._metrics = serve_metrics(host, port, collector)
        self.metrics_port = self._metrics.port

    def _announce_udp_path(self, endpoint: UdpEndpoint) -> None:
        if endpoint.fast:
            server_log.info("UDP fast path: %s", FAST_PATH_NAME)
        else:
            server_log.info(
                "UDP fast path unavailable (%s): pure Python", endpoint.fast_path_refusal
            )

    @property
    def udp_fast_path(self) -> bool:
        """Whether the C fast path serves UDP (``False`` before start-up)."""
        return bool(self._udp) and all(endpoint.fast for endpoint in self._udp)

    def _announce(self, transport: str, sockname: tuple[str, int]) -> None:
        address = record_address(self.addresses, sockname)
        server_log.info("Bind %s on %s...", transport, format_address(address))

    def _new_connection(self) -> TcpConnection:
        config = self.config
        assert self._registry is not None
        framing = make_framing(config.tcp_framing, max_line=config.max_request)
        return TcpConnection(self._registry.settings, framing, self._registry)

    async def main_loop(self) -> None:
        await self._should_exit.wait()

    async def shutdown(self) -> None:
        """Stop taking work, answer what was received, close everything."""
        for server in self._tcp_servers:
            server.close()
        for endpoint in self._udp:
            endpoint.stop_reading()
        for connection in list(self._connections):
            connection.stop_reading()
        try:
            await self._wait_or_force(self._drained(), self.config.graceful_timeout)
        finally:
            for connection in list(self._connections):
                connection.abort()
            for endpoint in self._udp:
                endpoint.close()
            if self._registry is not None:
                self._registry.close()
            if self._metrics is not None:
                self._metrics.close()
                self._metrics = None
            for server in self._tcp_servers:
                await self._wait_or_force(server.wait_closed(), 1.0)
            self._udp.clear()
            self._tcp_servers.clear()

    async def _drained(self) -> None:
        for endpoint in self._udp:
            await endpoint.wait_idle()
        pending = [connection.closed for connection in self._connections]
        if pending:
            await asyncio.wait(pending)

    async def _wait_or_force(self, work: object, timeout: float) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[call-overload]
        force = asyncio.ensure_future(self._force_exit.wait())
        try:
            await asyncio.wait([task, force], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, force):
                pending.cancel()

    async def serve(self, *, install_signals: bool = True) -> None:
        """Start, serve until asked to stop, shut down and log the summary.

        Signal handlers go in before the sockets are bound, so a SIGTERM that
        arrives right after the ``Bind ...`` lines still drains gracefully.
        """
        with StopSignals(self._stop_gracefully, self._stop_now, install=install_signals):
            await self.startup()
            try:
                await self.main_loop()
            finally:
                await self.shutdown()
                server_log.info("%s", self.summary())

    def request_exit(self) -> None:
        """Ask for a graceful stop (what the first SIGINT/SIGTERM does)."""
        self._should_exit.set()

    def force_exit(self) -> None:
        """Stop waiting for in-flight work (what a second signal does)."""
        self._should_exit.set()
        self._force_exit.set()

    def _stop_gracefully(self, signal_name: str) -> None:
        server_log.info("Received %s, shutting down gracefully...", signal_name)
        self.request_exit()

    def _stop_now(self, signal_name: str) -> None:
        server_log.info("Received %s again, exiting now.", signal_name)
        self.force_exit()

    # -- async context manager --------------------------------------------------

    async def __aenter__(self) -> Server:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


def format_counters(stats: dict[str, CounterSnapshot], *, udp: bool, tcp: bool) -> str:
    """``UDP received=... kernel_drops=N; TCP received=... connections(...)``."""
    parts = []
    if udp:
        datagrams = stats["udp"]
        parts.append(f"UDP {datagrams.summary()} kernel_drops={datagrams.kernel_drops}")
    if tcp:
        stream = stats["tcp"]
        parts.append(
            f"TCP {stream.summary()} connections(opened={stream.connections_opened} "
            f"denied={stream.connections_denied} busy={stream.connections_rejected} "
            f"idle={stream.closed_idle} slow={stream.closed_slow} "
            f"write_timeout={stream.closed_write_timeout} bad_proxy={stream.closed_bad_proxy})"
        )
    return "; ".join(parts)


def make_proxy_policy(config: ServerConfig) -> ProxyProtocolPolicy | None:
    """Who must send a PROXY header, or ``None`` when the PROXY protocol is off."""
    if not config.proxy_protocol:
        return None
    return ProxyProtocolPolicy(parse_networks(config.proxy_trusted))


def record_address(addresses: list[tuple[str, int]], sockname: tuple[str, int]) -> tuple[str, int]:
    """Add a bound socket's (host, port) to ``addresses`` once; return it."""
    address = (sockname[0], sockname[1])
    if address not in addresses:
        addresses.append(address)
    return address


def make_admission(config: ServerConfig) -> Admission | None:
    """The access lists and rate limiter the config asks for; ``None`` if neither."""
    allow = parse_networks(config.allow)
    deny = parse_networks(config.deny)
    limiter = None
    if config.rate_limit is not None:
        burst = config.rate_burst if config.rate_burst is not None else 2 * config.rate_limit
        limiter = TokenBucketTable(
            rate=config.rate_limit, burst=max(1.0, burst), size=config.rate_table_size
        )
    if limiter is None and not allow and not deny:
        return None
    classifier = SourceClassifier(
        ipv4_prefix=config.ipv4_prefix,
        ipv6_prefix=config.ipv6_prefix,
        allow=allow,
        deny=deny,
        exempt=parse_networks(config.limit_exempt),
    )
    return Admission(classifier, limiter)


def serve(config: ServerConfig) -> None:
    """Run a server until SIGINT/SIGTERM (the function behind ``udpkit serve``)."""
    run_with_loop(Server(config).serve(), config.loop)
