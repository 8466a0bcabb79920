"""UDP glue of the proxy: one upstream socket per client, the policy in between.

Rule: this module only moves datagrams.  Each datagram read is handed to the
direction's policy (:class:`DatagramPolicy`), whose deliveries go
into the :class:`~udpkit.proxy.delay_line.DelayLine`; sending happens there,
at once, and a full socket buffer or an error is counted, never raised.  Every
client address gets its own connected upstream socket, so the service's
replies on it belong to that client alone.

Datagrams the kernel drops on these sockets (their receive buffer full: a burst
faster than the proxy reads) are counted from the kernel's own counter by
:class:`~udpkit.server.kernel_drops.DropReader`, the server's owner of that
rule: ``kernel_drops_up`` on the listeners, ``kernel_drops_down`` on the
upstream sockets, read whenever stats are asked for and before a socket closes.
Each socket asks for a :data:`SOCKET_BUFFER` receive buffer, so such a burst
is rarely lost in the first place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from udpkit.capture.writer import PcapRecorder
from udpkit.core.handler import Address
from udpkit.core.impairment import Decision
from udpkit.proxy.delay_line import DelayLine
from udpkit.proxy.sessions import SessionTable
from udpkit.proxy.stats import GlueCounters
from udpkit.server.kernel_drops import DropReader

proxy_log = logging.getLogger("udpkit.proxy")

_READS_PER_WAKEUP = 256
"""Datagrams read per wake-up before yielding to the event loop."""
_RECV_SIZE = 65536

SOCKET_BUFFER = 4 * 1024 * 1024
"""The receive buffer (bytes) each proxy socket asks for, as ``udpkit bench``'s sockets
do: Linux's default (``net.core.rmem_default``, 208 KiB) holds only a few hundred small
datagrams, so a burst of a thousand sent at once lost most of them before the proxy could
read.  The kernel grants at most ``net.core.rmem_max``; a buffer is a limit, charged only
for datagrams queued."""


def _ask_buffer(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # best effort: the kernel caps it at rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


class DatagramPolicy(Protocol):
    """What one direction does to each datagram (sans-IO): a
    :class:`~udpkit.core.impairment.LinkPolicy` or a named proxy's toxic chain."""

    def decide(self, data: bytes, now: float) -> Decision: ...


class Session:
    """One UDP client and its upstream socket."""

    __slots__ = ("client", "closed", "drops", "listener", "upstream")

    def __init__(self, client: Address, listener: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.listener = listener
        self.upstream = upstream
        self.closed = False
        self.drops = DropReader()
        """The kernel's drops on ``upstream`` not yet counted."""


class UdpRelay:
    """The proxy's UDP side: listening sockets, sessions, both directions."""

    def __init__(
        self,
        listeners: list[socket.socket],
        upstream: Address,
        family: socket.AddressFamily,
        *,
        up: DatagramPolicy,
        down: DatagramPolicy,
        delay_line: DelayLine,
        counters: GlueCounters,
        max_sessions: int,
        idle_timeout: float,
        tap: PcapRecorder | None = None,
    ) -> None:
        self.tap = tap
        self.listeners = listeners
        self.upstream = upstream
        self.family = family
        self.up = up
        self.down = down
        self.delay_line = delay_line
        self.counters = counters
        self.sessions: SessionTable[Address, Session] = SessionTable(
            max_sessions=max_sessions, idle_timeout=idle_timeout
        )
        self._loop = asyncio.get_running_loop()
        self._expiry: asyncio.TimerHandle | None = None
        self._reading: list[socket.socket] = []
        self._listener_drops = [DropReader() for _ in listeners]
        for listener in listeners:
            _ask_buffer(listener)

    def account_kernel_drops(self) -> None:
        """Add the datagrams the kernel dropped on every socket since the last call."""
        counters = self.counters
        for listener, drops in zip(self.listeners, self._listener_drops, strict=True):
            counters.kernel_drops_up += drops.new(listener)
        for session in self.sessions.values():
            if not session.closed:
                counters.kernel_drops_down += session.drops.new(session.upstream)

    def start(self) -> None:
        for listener in self.listeners:
            self._loop.add_reader(listener.fileno(), self._read_clients, listener)
            self._reading.append(listener)

    def close(self) -> None:
        for listener in self._reading:
            self._loop.remove_reader(listener.fileno())
        self._reading.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.account_kernel_drops()
        for session in self.sessions.pop_all():
            self._close_session(session)
        for listener in self.listeners:
            listener.close()

    # -- client to server ------------------------------------------------------

    def _read_clients(self, listener: socket.socket) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, address = listener.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                proxy_log.debug("UDP receive error on the listener (ignored): %s", exc)
                continue
            now = self._loop.time()
            session = self._session_for(address, listener, now)
            if session is None:
                continue
            self._forward(self.up, data, now, self._sender_up(session))

    def _session_for(
        self, address: Address, listener: socket.socket, now: float
    ) -> Session | None:
        session = self.sessions.get(address)
        if session is not None:
            self.sessions.touch(address, now)
            return session
        try:
            upstream = socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError as exc:  # out of file descriptors: drop, keep serving
            proxy_log.warning("cannot open an upstream socket: %s", exc)
            self.counters.send_errors_up += 1
            return None
        try:
            upstream.setblocking(False)
            _ask_buffer(upstream)
            upstream.connect(self.upstream)
        except OSError as exc:
            upstream.close()
            proxy_log.warning("cannot reach upstream %s: %s", self.upstream, exc)
            self.counters.send_errors_up += 1
            return None
        session = Session(address, listener, upstream)
        for evicted in self.sessions.add(address, session, now):
            self.counters.sessions_evicted += 1
            self._close_session(evicted)
        self.counters.sessions_opened += 1
        self._loop.add_reader(upstream.fileno(), self._read_upstream, session)
        self._arm_expiry()
        return session

    def _sender_up(self, session: Session) -> Callable[[bytes], None]:
        def send(payload: bytes) -> None:
            if session.closed:
                self.counters.send_errors_up += 1
                return
            try:
                session.upstream.send(payload)
            except ConnectionRefusedError:
                self.counters.upstream_refused += 1  # an earlier datagram's ICMP
            except OSError:
                self.counters.send_errors_up += 1
            else:
                if self.tap is not None:
                    self.tap.datagram(client=session.client, proxy=session.listener,
                                      payload=payload, to_server=True)

        return send

    # -- server to client ------------------------------------------------------

    def _read_upstream(self, session: Session) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if session.closed:
                return
            try:
                data = session.upstream.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self.counters.upstream_refused += 1
                continue
            except OSError as exc:
                proxy_log.debug("UDP receive error upstream (ignored): %s", exc)
                return
            now = self._loop.time()
            self.sessions.touch(session.client, now)
            self._forward(self.down, data, now, self._sender_down(session))

    def _sender_down(self, session: Session) -> Callable[[bytes], None]:
        def send(payload: bytes) -> None:
            try:
                session.listener.sendto(payload, session.client)
            except OSError:
                self.counters.send_errors_down += 1
            else:
                if self.tap is not None:
                    self.tap.datagram(client=session.client, proxy=session.listener,
                                      payload=payload, to_server=False)

        return send

    # -- both ----------------------------------------------------------------------

    def _forward(
        self, policy: DatagramPolicy, data: bytes, now: float, send: Callable[[bytes], None]
    ) -> None:
        decision = policy.decide(data, now)
        for delivery in decision.deliveries:
            data = delivery.data
            if not self.delay_line.schedule(delivery.at, functools.partial(send, data),
                                            len(data)):
                self.counters.delay_queue_full += 1
        if decision.deliveries:
            self.delay_line.run_due(now)

    # -- idle sessions ---------------------------------------------------------------

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            return
        when = self.sessions.next_expiry()
        if when is not None:
            self._expiry = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        for session in self.sessions.expire(self._loop.time()):
            self.counters.sessions_expired += 1
            self._close_session(session)
        self._arm_expiry()

    def _close_session(self, session: Session) -> None:
        if session.closed:
            return
        self.counters.kernel_drops_down += session.drops.new(session.upstream)
        session.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(session.upstream.fileno())
        session.upstream.close()
