"""The server's life cycle: startup, serving, graceful shutdown.

Rule: settings live in :class:`~udpkit.server.config.ServerConfig`; this
module owns only the running state, and :class:`~udpkit.service.Service` the
order of the steps and the signals.  The first SIGINT/SIGTERM stops taking new
work, answers what was already received, closes TCP connections and prints a
one-line summary of the counters; a second signal skips the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from udpkit.apps import load_app
from udpkit.core.admission import Admission
from udpkit.core.counters import Counters, CounterSnapshot
from udpkit.core.errors import UsageError
from udpkit.core.framing import make_framing
from udpkit.core.handler import Handler, format_address
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.proxy_protocol import ProxyProtocolPolicy
from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier, parse_networks
from udpkit.server.accept import TcpListener, listen_tcp
from udpkit.server.binding import BoundSockets, bind
from udpkit.server.config import ServerConfig
from udpkit.server.dispatch import AsyncCalls, is_async_handler
from udpkit.server.event_loops import run_with_loop
from udpkit.server.handler_threads import ThreadedHandler
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
from udpkit.server.watchdog import LoopWatchdog
from udpkit.service import Service

if TYPE_CHECKING:
    from udpkit.server.metrics import MetricsServer

class Server(Service):
    """A running udpkit server; use ``async with Server(config) as server``."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__()
        self.config = config
        handler = (load_app(config.app, options=config.app_options, clock=time.monotonic)
                   if isinstance(config.app, str) else config.app)
        outcomes = getattr(handler, "outcomes", None)
        self._outcomes: Callable[[], Mapping[str, int]] | None = (
            outcomes if callable(outcomes) else None)
        """A handler's own tally (``outcomes() -> {name: count}``, e.g. the dns app's
        malformed queries and rate-limited answers): :meth:`handler_outcomes`."""
        reload = getattr(handler, "reload", None)
        self._reload: Callable[[], object] | None = reload if callable(reload) else None
        """The handler's ``reload()`` (``serve dns``: the zone file), run on SIGHUP."""
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._threads: ThreadedHandler | None = None
        if config.handler_threads:
            if is_async_handler(handler):
                raise UsageError("--handler-threads runs sync handlers in threads; this "
                                 "handler is async already")
            handler = self._threads = ThreadedHandler(
                handler, threads=config.handler_threads  # type: ignore[arg-type]
            )
        self.handler: Handler = handler
        self._watchdog: LoopWatchdog | None = None
        self.udp_counters = Counters()
        self.tcp_counters = Counters()
        self.port: int = config.port
        self.addresses: list[tuple[str, int]] = []
        self._sockets: BoundSockets | None = None
        self.admission = make_admission(config)
        self.async_calls = {
            transport: AsyncCalls(timeout=config.handler_timeout, max_total=config.max_pending,
                                  max_per_source=config.max_pending_per_source)
            for transport in ("udp", "tcp")
        }
        """Each transport's running async handler calls, capped and timed."""
        self._udp: list[UdpEndpoint] = []
        self._tcp_servers: list[TcpListener] = []
        self._registry: ConnectionRegistry | None = None
        self.latency = (
            LatencyHistogram() if config.metrics is not None or config.record_latency else None
        )
        self._metrics: MetricsServer | None = None
        self.metrics_port: int | None = None

    # -- public state ---------------------------------------------------------

    def stats(self) -> dict[str, CounterSnapshot]:
        """Frozen counters per transport (the kernel's drop counts read just now)."""
        for endpoint in self._udp:
            endpoint.account_kernel_drops()
        return {"udp": self.udp_counters.snapshot(), "tcp": self.tcp_counters.snapshot()}

    def handler_outcomes(self) -> dict[str, int]:
        """The handler's own tally (its ``outcomes()``, e.g. ``serve dns``'s ``formerr``,
        ``refused``, ``rrl_drop``), or ``{}`` for a handler that keeps none; in the
        summary and ``/metrics`` beside udpkit's counters."""
        return dict(self._outcomes()) if self._outcomes is not None else {}

    def summary(self) -> str:
        """``Summary: UDP received=... kernel_drops=N; TCP received=... connections(...)``
        and ``; handler(formerr=2 ...)`` for a handler with its own tally."""
        return "Summary: " + format_counters(self.stats(), udp=self.config.udp, tcp=self.config.tcp,
                                             outcomes=self.handler_outcomes())

    @property
    def open_connections(self) -> int:
        return len(self._registry) if self._registry is not None else 0

    @property
    def connections(self) -> frozenset[TcpConnection]:
        """The open TCP connections (a copy: closing one does not change it)."""
        return frozenset(self._registry.connections if self._registry is not None else ())

    @property
    def udp_endpoints(self) -> tuple[UdpEndpoint, ...]:
        """The UDP sockets served, one per bound address."""
        return tuple(self._udp)

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
                    async_calls=self.async_calls["tcp"],
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
        for sock in self._sockets.udp:
            endpoint = UdpEndpoint(
                sock,
                self.handler,
                self.udp_counters,
                async_calls=self.async_calls["udp"],
                max_request=config.max_request,
                recv_buffer=config.recv_buffer,
                send_queue=config.udp_send_queue,
                access_log=config.access_log,
                admission=self.admission,
                max_amplification=config.max_amplification,
                latency=self.latency,
                fast_path=config.fast_path,
                busy_poll=config.busy_poll,
            )
            if not self._udp:
                self._announce_udp_path(endpoint)
            endpoint.start()
            self._udp.append(endpoint)
            self._announce("UDP", sock.getsockname())
        for sock in self._sockets.tcp:
            server = await listen_tcp(self._new_connection, sock, backlog=config.tcp_backlog)
            self._tcp_servers.append(server)
            self._announce("TCP", sock.getsockname())
        if config.metrics is not None:
            self._start_metrics(*config.metrics)
        if config.stall_warning > 0:
            self._watchdog = LoopWatchdog(threshold=config.stall_warning)
            self._watchdog.start()
        if self._threads is not None:
            server_log.info("Sync handler on %d threads (--handler-threads)", self._threads.threads)

    def _start_metrics(self, host: str, port: int) -> None:
        from udpkit.server.metrics import ServerCollector, serve_metrics

        assert self.latency is not None
        collector = ServerCollector(self.stats, lambda: self.open_connections, self.latency,
                                    outcomes=self.handler_outcomes)
        self._metrics = serve_metrics(host, port, collector)
        self.metrics_port = self._metrics.port

    def _announce_udp_path(self, endpoint: UdpEndpoint) -> None:
        if endpoint.fast:
            server_log.info("UDP fast path: %s", FAST_PATH_NAME)
        else:
            server_log.info(
                "UDP fast path unavailable (%s): pure Python", endpoint.fast_path_refusal
            )
        if endpoint.busy_poll.enabled:
            server_log.info("UDP busy polling: %g us after the last datagram (--busy-poll)",
                            endpoint.busy_poll.duration * 1e6)

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

    async def shutdown(self) -> None:
        """Stop taking work, answer what was received, close everything."""
        for server in self._tcp_servers:
            server.close()
        for endpoint in self._udp:
            endpoint.stop_reading()
        for connection in self.connections:
            connection.stop_reading()
        try:
            await self.wait_or_force(self._drained(), self.config.graceful_timeout)
        finally:
            for connection in self.connections:
                connection.abort()
            for endpoint in self._udp:
                endpoint.close()
            if self._registry is not None:
                self._registry.close()
            if self._metrics is not None:
                self._metrics.close()
                self._metrics = None
            for server in self._tcp_servers:
                await self.wait_or_force(server.wait_closed(), 1.0)
            self._udp.clear()
            self._tcp_servers.clear()
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None
            if self._threads is not None:
                self._threads.close()

    async def _drained(self) -> None:
        for endpoint in self._udp:
            await endpoint.wait_idle()
        pending = [connection.closed for connection in self.connections]
        if pending:
            await asyncio.wait(pending)

    def stopped(self) -> None:
        server_log.info("%s", self.summary())

    @property
    def reloadable(self) -> bool:
        """Whether the handler has a ``reload()`` (``serve dns``), run on SIGHUP."""
        return self._reload is not None

    def reload(self) -> None:
        """Run the handler's ``reload()`` on a thread (a large zone takes a while to
        parse; the loop goes on answering meanwhile); it says what it loaded
        (logged), or raises for what it could not (logged; the handler keeps what it
        had).  A SIGHUP while a reload runs is one more reload after it."""
        if self._reload is None:
            return
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.get_running_loop().create_task(self._reload_off_loop())

    async def _reload_off_loop(self) -> None:
        assert self._reload is not None
        again = True
        while again:
            self._reload_again = False
            try:
                what = await asyncio.to_thread(self._reload)
            except Exception as exc:  # a handler's, whatever it is: the server keeps serving
                server_log.error("Reload failed, serving what was loaded before: %s", exc)
            else:
                server_log.info("Reloaded: %s", what)
            again = self._reload_again

    def signal_received(self, signal_name: str, *, again: bool) -> None:
        if again:
            server_log.info("Received %s again, exiting now.", signal_name)
        else:
            server_log.info("Received %s, shutting down gracefully...", signal_name)


def format_counters(stats: dict[str, CounterSnapshot], *, udp: bool, tcp: bool,
                    outcomes: Mapping[str, int] | None = None) -> str:
    """``UDP received=... kernel_drops=N; TCP received=... connections(...)``, and
    ``; handler(name=count ...)`` when the handler keeps ``outcomes``."""
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
    if outcomes:
        parts.append("handler(" + " ".join(f"{name}={count}" for name, count in outcomes.items())
                     + ")")
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
