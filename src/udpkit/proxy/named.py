"""One named proxy of Toxiproxy's API: its sockets, its toxics, its counters.

Rule: glue only.  The checks and decisions are :mod:`udpkit.core.toxiproxy`'s
and :mod:`udpkit.core.toxics`'; this module binds, relays through the same UDP
and TCP glue as the ``--loss ...`` proxy, and swaps toxic chains when the API
changes them.  Life cycle, as Toxiproxy's: :meth:`NamedProxy.start` binds (the
UDP socket, for a UDP proxy, stays bound while the proxy exists);
``enabled: false`` closes the TCP listener and every TCP connection (new ones
are refused) and makes the UDP side drop every datagram, counted; deleting a
proxy closes all of it.  A proxy's decisions come from its own seeded
generators (``seed``, the proxy's name, the direction, the connection's
number), so one proxy's traffic never shifts another's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from udpkit.capture.writer import PcapRecorder
from udpkit.client.aio import resolve_with_family
from udpkit.core.handler import Address, format_address
from udpkit.core.impairment import Decision, seeded_rng
from udpkit.core.toxics import (
    DatagramToxics,
    StreamEvent,
    StreamToxics,
    Toxic,
    ToxicCounters,
    Write,
)
from udpkit.core.toxiproxy import ProxySpec
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.stats import GlueCounters, GlueStats
from udpkit.proxy.tcp import TcpRelay, reset
from udpkit.proxy.udp import UdpRelay, proxy_log
from udpkit.server.binding import bind

_STREAMS = {"up": "upstream", "down": "downstream"}


class DirectionCounters:
    """Traffic one way through one named proxy (plain ints)."""

    __slots__ = ("bytes_received", "bytes_sent", "chunks", "datagrams_dropped",
                 "datagrams_forwarded", "datagrams_received", "dropped_disabled")

    def __init__(self) -> None:
        self.datagrams_received = 0
        self.datagrams_forwarded = 0
        self.datagrams_dropped = 0
        """Dropped by a toxic (loss, burst_loss, timeout)."""
        self.dropped_disabled = 0
        """Dropped because the proxy is disabled."""
        self.chunks = 0
        """TCP reads."""
        self.bytes_received = 0
        """Bytes read (UDP and TCP)."""
        self.bytes_sent = 0
        """Bytes handed on (after toxics; duplicates counted)."""

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _DatagramSide:
    """One direction of the UDP side: the current chain, or drop all while disabled."""

    def __init__(self, owner: NamedProxy, direction: str) -> None:
        self.owner = owner
        self.direction = direction
        self.counters = DirectionCounters()
        self.chain = DatagramToxics([], seeded_rng(0), {})

    def decide(self, data: bytes, now: float) -> Decision:
        counters = self.counters
        counters.datagrams_received += 1
        counters.bytes_received += len(data)
        if not self.owner.spec.enabled:
            counters.dropped_disabled += 1
            return Decision((), dropped="loss")
        decision = self.chain.decide(data, now)
        if decision.deliveries:
            counters.datagrams_forwarded += 1
            counters.bytes_sent += sum(len(d.data) for d in decision.deliveries)
        else:
            counters.datagrams_dropped += 1
        return decision


class _CountedStream:
    """A connection direction's toxic chain, counting what goes in and out."""

    def __init__(self, chain: StreamToxics, counters: DirectionCounters) -> None:
        self.chain = chain
        self.counters = counters

    def start(self, now: float) -> list[StreamEvent]:
        return self._count(self.chain.start(now))

    def feed(self, chunk: bytes, now: float) -> list[StreamEvent]:
        self.counters.chunks += 1
        self.counters.bytes_received += len(chunk)
        return self._count(self.chain.feed(chunk, now))

    def end(self, now: float) -> list[StreamEvent]:
        return self._count(self.chain.end(now))

    def _count(self, events: list[StreamEvent]) -> list[StreamEvent]:
        self.counters.bytes_sent += sum(len(e.data) for e in events if isinstance(e, Write))
        return events


class NamedProxy:
    """A proxy of the Toxiproxy API: ``name``, ``listen``, ``upstream``, ``enabled``,
    ``protocol`` and an ordered list of toxics."""

    def __init__(self, spec: ProxySpec, *, seed: int, settings: ProxyConfig,
                 delay_line: DelayLine, tap: PcapRecorder | None = None) -> None:
        self.spec = spec
        self.tap = tap
        self.seed = seed
        self.settings = settings
        self.delay_line = delay_line
        self.toxics: list[Toxic] = []
        self.toxic_counters: dict[str, ToxicCounters] = {}
        self.counters = GlueCounters()
        self.listen = spec.listen
        """The address as bound (``127.0.0.1:0`` becomes ``127.0.0.1:40123``)."""
        self._udp_up = _DatagramSide(self, "up")
        self._udp_down = _DatagramSide(self, "down")
        self._tcp_up = DirectionCounters()
        self._tcp_down = DirectionCounters()
        self._udp: UdpRelay | None = None
        self._tcp_servers: list[asyncio.Server] = []
        self._relays: dict[asyncio.Task[None], TcpRelay] = {}
        self._upstream: Address | None = None
        self._family = socket.AF_INET
        self._port = 0
        self._connections = 0
        self._generation = 0
        self.set_toxics(spec.toxics)

    # -- toxics -------------------------------------------------------------------

    def set_toxics(self, toxics: Sequence[Toxic]) -> None:
        """Replace the chain (in order); live connections re-roll ``toxicity`` now."""
        self.toxics = list(toxics)
        for toxic in self.toxics:
            self.toxic_counters.setdefault(toxic.name, ToxicCounters())
        self._generation += 1
        for side in (self._udp_up, self._udp_down):
            self._rebuild_datagrams(side)
        for relay in self._relays.values():
            up, down = self._stream_shapers(relay.number)
            relay.replace_shapers(up, down)

    def _chain(self, direction: str) -> list[Toxic]:
        return [t for t in self.toxics if t.stream == _STREAMS[direction]]

    def _rebuild_datagrams(self, side: _DatagramSide) -> None:
        rng = seeded_rng(self.seed, self.spec.name, "udp", side.direction,
                         str(self._generation))
        side.chain = DatagramToxics(self._chain(side.direction), rng, self.toxic_counters)

    def _stream_shapers(self, connection: int) -> tuple[_CountedStream, _CountedStream]:
        shapers = []
        for direction, counters in (("up", self._tcp_up), ("down", self._tcp_down)):
            rng = seeded_rng(self.seed, self.spec.name, "tcp", str(connection), direction,
                             str(self._generation))
            chain = StreamToxics(self._chain(direction), rng, self.toxic_counters)
            shapers.append(_CountedStream(chain, counters))
        return shapers[0], shapers[1]

    # -- life cycle ---------------------------------------------------------------

    @property
    def tcp(self) -> bool:
        return self.spec.protocol in ("tcp", "both")

    @property
    def udp(self) -> bool:
        return self.spec.protocol in ("udp", "both")

    @property
    def running(self) -> bool:
        return bool(self._tcp_servers) or self._udp is not None

    async def start(self) -> None:
        """Bind and serve what ``spec.enabled`` says; :class:`UsageError` if it cannot."""
        host, port = self.spec.listen_address
        if self._udp is None:
            self._upstream, self._family = await resolve_with_family(
                *self.spec.upstream_address, socket.SOCK_DGRAM, what="upstream host")
        want_tcp = self.tcp and self.spec.enabled and not self._tcp_servers
        want_udp = self.udp and self._udp is None
        if not (want_tcp or want_udp):
            return
        if self._port:
            port = self._port
        sockets = bind(host, port, udp=want_udp, tcp=want_tcp)
        try:
            if want_udp:
                assert self._upstream is not None
                self._udp = UdpRelay(
                    sockets.udp, self._upstream, self._family, up=self._udp_up,
                    down=self._udp_down, delay_line=self.delay_line, counters=self.counters,
                    max_sessions=self.settings.max_sessions,
                    idle_timeout=self.settings.idle_timeout, tap=self.tap)
                self._udp.start()
            for sock in sockets.tcp:
                self._tcp_servers.append(
                    await asyncio.start_server(self._new_connection, sock=sock))
        except BaseException:
            sockets.close()
            raise
        self._port = sockets.port
        self.listen = format_address((host, sockets.port))

    async def disable(self) -> None:
        """Toxiproxy's "down": the TCP listener and connections close; UDP drops."""
        await self._stop_tcp()

    async def stop(self) -> None:
        """Close everything (delete, or a change of listen/upstream/protocol)."""
        await self._stop_tcp()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._port = 0

    async def _stop_tcp(self) -> None:
        servers, self._tcp_servers = self._tcp_servers, []
        for server in servers:
            server.close()
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.wait(list(self._relays), timeout=2.0)
        for server in servers:
            try:
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
            except TimeoutError:
                pass

    # -- TCP ----------------------------------------------------------------------

    def _new_connection(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        if len(self._relays) >= self.settings.max_connections or not self.spec.enabled:
            self.counters.tcp_rejected += 1
            reset(writer)
            return
        self.counters.tcp_opened += 1
        self._connections += 1
        up, down = self._stream_shapers(self._connections)
        relay = TcpRelay(reader, writer, up=up, down=down, counters=self.counters,
                         number=self._connections, tap=self.tap)
        task = asyncio.get_running_loop().create_task(self._relay(relay, writer))
        self._relays[task] = relay
        task.add_done_callback(self._relays.pop)

    async def _relay(self, relay: TcpRelay, writer: asyncio.StreamWriter) -> None:
        upstream = self.spec.upstream_address
        try:
            await relay.run(lambda: asyncio.open_connection(upstream[0], upstream[1]),
                            self.settings.connect_timeout)
        except Exception as exc:  # a bug: report it, never stop the proxy
            proxy_log.error("internal error in proxy %r (it keeps running)", self.spec.name,
                            exc_info=exc)
        finally:
            if not writer.transport.is_closing():
                writer.transport.abort()
            self.counters.tcp_closed += 1

    # -- what it did --------------------------------------------------------------

    def direction_counters(self, direction: str) -> DirectionCounters:
        """UDP and TCP of one direction together."""
        total = DirectionCounters()
        for part in ((self._udp_up, self._tcp_up) if direction == "up"
                     else (self._udp_down, self._tcp_down)):
            counters = part.counters if isinstance(part, _DatagramSide) else part
            for name in DirectionCounters.__slots__:
                setattr(total, name, getattr(total, name) + getattr(counters, name))
        return total

    def glue_stats(self) -> GlueStats:
        """The glue's counters now (the kernel's drops on the UDP sockets read first)."""
        if self._udp is not None:
            self._udp.account_kernel_drops()
        return self.counters.snapshot()

    def summary(self) -> dict[str, object]:
        glue = self.glue_stats()
        return {
            "listen": self.listen,
            "upstream": self.spec.upstream,
            "protocol": self.spec.protocol,
            "enabled": self.spec.enabled,
            "upstream_stream": self.direction_counters("up").as_json(),
            "downstream_stream": self.direction_counters("down").as_json(),
            "proxy": {name: getattr(glue, name) for name in GlueCounters.__slots__}
            | {"tcp_active": len(self._relays),
               "sessions_active": len(self._udp.sessions) if self._udp else 0},
            "toxics": {name: counters.as_json()
                       for name, counters in self.toxic_counters.items()},
        }
