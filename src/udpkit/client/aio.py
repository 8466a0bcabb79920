"""The asyncio client: thin glue around :mod:`udpkit.core.exchange`.

Rule: the UDP path feeds the sans-IO core and arms one timer; ``_transmit``
is the one place that sends.  The TCP path pipelines requests on one
connection and matches replies in order; a broken connection is re-opened
within the request's deadline.  Its framing (:mod:`udpkit.core.framing`) says
whether a welcome comes first and what closes politely (len16: no welcome, no
``exit``; the connection is just closed).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import cast

from udpkit.apps import DEFAULT_APP, ReplyRuleLike, reply_rule
from udpkit.core.errors import (
    ConnectionClosed,
    LocalProtocolError,
    RequestFailed,
    RequestRefused,
    RequestTimeout,
    UnexpectedReply,
    UsageError,
)
from udpkit.core.exchange import Answered, ClientStats, DatagramClientCore, Failed
from udpkit.core.framing import FramingName, make_framing
from udpkit.core.handler import Address, TransportName, format_address
from udpkit.core.matching import ReplyRule
from udpkit.core.retry import RetryPolicy, RetrySchedule
from udpkit.timer import DeadlineTimer

_TCP_MAX_REPLY = 1 << 20


async def resolve_address(host: str, port: int, kind: socket.SocketKind) -> Address:
    """The first address ``host`` resolves to, or :class:`UsageError`."""
    return (await resolve_with_family(host, port, kind))[0]


async def resolve_with_family(
    host: str, port: int, kind: socket.SocketKind, *, what: str = "host"
) -> tuple[Address, socket.AddressFamily]:
    """The first IPv4 or IPv6 address ``host`` resolves to and its family, or
    :class:`UsageError` naming it as ``what`` (``"upstream host"``)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {what} {host!r}: {exc.strerror}") from None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return (str(sockaddr[0]), int(sockaddr[1])), family
    raise UsageError(f"{what} {host!r} has no IPv4 or IPv6 address")


class AsyncClient:
    """Send requests to a udpkit-style service and wait for matching replies.

    ``async with AsyncClient("127.0.0.1", 9999) as client:
    reply = await client.request(b"Michael")``.
    Concurrent ``request`` calls on one client are matched correctly.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9999,
        *,
        transport: TransportName = "udp",
        timeout: float = 5.0,
        retries: int = 3,
        matcher: ReplyRuleLike = DEFAULT_APP,
        framing: FramingName = "line",
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise UsageError(f"transport must be 'udp' or 'tcp' (got {transport!r})")
        self.host = host
        self.port = port
        self.transport: TransportName = transport
        self.policy = policy or RetryPolicy(timeout=timeout, retries=retries)
        self.matcher = reply_rule(matcher)
        self.framing: FramingName = framing
        self._rng = rng or random.Random()
        self._impl: _UdpChannel | _TcpChannel | None = None

    @property
    def address(self) -> Address | None:
        """The server's resolved address, once connected."""
        return self._impl.server if self._impl else None

    async def connect(self) -> None:
        if self._impl is not None:
            return
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        server = await resolve_address(self.host, self.port, kind)
        if self.transport == "udp":
            channel: _UdpChannel | _TcpChannel = _UdpChannel(
                server, self.matcher, self.policy, self._rng
            )
        else:
            channel = _TcpChannel(server, self.matcher, self.policy, self._rng, self.framing)
        await channel.open()
        self._impl = channel

    async def close(self) -> None:
        if self._impl is not None:
            await self._impl.close()
            self._impl = None

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(self, payload: bytes) -> bytes:
        """Send ``payload``; return the matching reply or raise :class:`RequestFailed`."""
        return (await self.exchange(payload)).reply

    async def exchange(self, payload: bytes) -> Answered:
        """Like :meth:`request`, with the round trip's time and attempts."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise UsageError(f"payload must be bytes, not {type(payload).__name__}")
        if not payload:
            raise LocalProtocolError("an empty request gets no reply (servers drop it)")
        await self.connect()
        assert self._impl is not None
        return await self._impl.exchange(bytes(payload))

    def stats(self) -> ClientStats:
        return self._impl.stats() if self._impl else ClientStats()


# --------------------------------------------------------------------------- UDP


class _UdpChannel(asyncio.DatagramProtocol):
    """A connected UDP socket driving a :class:`DatagramClientCore`."""

    def __init__(
        self, server: Address, matcher: ReplyRule, policy: RetryPolicy, rng: random.Random
    ) -> None:
        self.server = server
        self._loop = asyncio.get_running_loop()
        self._core = DatagramClientCore(server=server, matcher=matcher, policy=policy, rng=rng)
        self._waiters: dict[int, asyncio.Future[Answered]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._timer = DeadlineTimer(self._loop, self._on_timer)

    async def open(self) -> None:
        # A connected socket: the kernel filters other sources and reports
        # ICMP port unreachable as ECONNREFUSED (error_received).
        await self._loop.create_datagram_endpoint(
            lambda: self, remote_addr=(self.server[0], self.server[1])
        )

    async def close(self) -> None:
        self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        for waiter in self._waiters.values():
            waiter.cancel()

    def stats(self) -> ClientStats:
        return self._core.stats()

    async def exchange(self, payload: bytes) -> Answered:
        token = self._core.request(payload, now=self._loop.time())
        waiter: asyncio.Future[Answered] = self._loop.create_future()
        self._waiters[token] = waiter
        self._after_input()
        try:
            return await waiter
        finally:
            if self._waiters.pop(token, None) is not None:
                self._core.cancel(token)  # the caller gave up (cancelled)

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._core.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
        self._after_input()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self._core.connection_refused(now=self._loop.time())
            self._after_input()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # -- glue -------------------------------------------------------------------

    def _after_input(self) -> None:
        self._transmit()
        self._deliver_events()
        self._timer.arm(self._core.get_timer())

    def _transmit(self) -> None:
        transport = self._transport
        for datagram in self._core.datagrams_to_send():
            if transport is not None:
                transport.sendto(datagram)

    def _deliver_events(self) -> None:
        core = self._core
        while (event := core.next_event()) is not None:
            waiter = self._waiters.pop(event.token, None)
            if waiter is None or waiter.done():
                continue
            if isinstance(event, Answered):
                waiter.set_result(event)
            else:
                waiter.set_exception(_failure(event, self.server, "udp"))

    def _on_timer(self, when: float) -> None:
        self._core.handle_timer(max(when, self._loop.time()))
        self._after_input()


def _failure(event: Failed, server: Address, transport: TransportName) -> RequestFailed:
    if event.cause == "protocol":
        reply = event.reply or b""
        return UnexpectedReply(
            f"reply {reply[:80]!r} does not match the request",
            address=format_address(server),
            attempts=event.attempts,
            elapsed=event.elapsed,
        )
    error = RequestTimeout if event.cause == "timeout" else RequestRefused
    what = "no reply" if event.cause == "timeout" else "port closed"
    return error(
        f"{what} over {transport}",
        address=format_address(server),
        attempts=event.attempts,
        elapsed=event.elapsed,
    )


# --------------------------------------------------------------------------- TCP


class _TcpConnection(asyncio.Protocol):
    """One TCP connection: the welcome, then replies matched to requests in order."""

    def __init__(self, framing: FramingName, on_lost: Callable[[_TcpConnection], None]) -> None:
        self.framer = make_framing(framing, max_line=_TCP_MAX_REPLY)
        self.raw = framing == "raw"
        self.transport: asyncio.Transport | None = None
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting: deque[asyncio.Future[bytes]] = deque()
        self.lost: Exception | None = None
        self._on_lost = on_lost
        self._welcome_seen = not self.framer.welcome  # len16: none to wait for
        if self._welcome_seen:
            self.welcomed.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        messages = self.framer.feed(data)
        if self.framer.too_long:
            self.connection_lost(UnexpectedReply("reply too long"))
            if self.transport is not None:
                self.transport.abort()
            return
        for message in messages:
            if not self._welcome_seen:
                self._welcome_seen = True
                if not self.welcomed.done():
                    self.welcomed.set_result(None)
                continue
            if self.waiting:
                waiter = self.waiting.popleft()
                if not waiter.done():
                    waiter.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is not None:
            return
        self.lost = exc or ConnectionResetError("connection closed by the server")
        waiters: list[asyncio.Future[None] | asyncio.Future[bytes]] = [self.welcomed, *self.waiting]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(self.lost)
                waiter.exception()  # retrieved: nobody may wait for it any more
        self.waiting.clear()
        self._on_lost(self)


class _TcpChannel:
    """Requests pipelined over one TCP connection, re-opened when it breaks."""

    def __init__(
        self,
        server: Address,
        matcher: ReplyRule,
        policy: RetryPolicy,
        rng: random.Random,
        framing: FramingName,
    ) -> None:
        self.server = server
        self.matcher = matcher
        self.policy = policy
        self.framing = framing
        self._rng = rng
        self._loop = asyncio.get_running_loop()
        self._connection: _TcpConnection | None = None
        self._connecting: asyncio.Future[_TcpConnection] | None = None
        self._lock_step = asyncio.Lock()  # raw framing: one request at a time
        self._rules = make_framing(framing, max_line=_TCP_MAX_REPLY)
        """What requests this framing can carry (its exit message, its longest message)."""
        self._stats = dict.fromkeys(ClientStats.__slots__, 0)

    async def open(self) -> None:
        # Connect lazily on the first request, inside its deadline.
        return None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            exit_message = connection.framer.exit
            if connection.lost is None and exit_message is not None:
                connection.transport.write(connection.framer.frame(exit_message))
            connection.transport.close()

    def stats(self) -> ClientStats:
        return ClientStats(**self._stats)

    async def exchange(self, payload: bytes) -> Answered:
        if self.framing == "line" and (b"\n" in payload or b"\r" in payload):
            raise LocalProtocolError("a TCP line request cannot contain a line break")
        if payload == self._rules.exit:
            raise LocalProtocolError("'exit' closes the connection; it gets no reply")
        limit = self._rules.max_reply
        if limit is not None and len(payload) > limit:
            raise LocalProtocolError(
                f"a {self.framing} request holds at most {limit} bytes (got {len(payload)})"
            )
        self._stats["requests"] += 1
        schedule = RetrySchedule(self.policy, now=self._loop.time(), rng=self._rng)
        if self.framing == "raw":
            async with self._lock_step:
                return await self._attempts(payload, schedule)
        return await self._attempts(payload, schedule)

    async def _attempts(self, payload: bytes, schedule: RetrySchedule) -> Answered:
        last: Exception | None = None
        while schedule.can_retry(self._loop.time()):
            if schedule.attempts:
                self._stats["retransmissions"] += 1
            schedule.start_attempt(self._loop.time())
            try:
                reply = await self._attempt(payload, schedule)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
                last = exc  # the connection broke: open a new one and try again
                await asyncio.sleep(min(0.05 * schedule.attempts, schedule.remaining(
                    self._loop.time())))
                continue
            except ConnectionRefusedError:
                self._stats["refused"] += 1
                raise self._error(RequestRefused, "connection refused", schedule) from None
            except TimeoutError:
                break
            except UnexpectedReply as exc:
                raise self._error(UnexpectedReply, exc.message, schedule) from None
            self._stats["answered"] += 1
            now = self._loop.time()
            return Answered(0, payload, reply, now - schedule.started, schedule.attempts)
        if last is not None and not schedule.expired(self._loop.time()):
            raise self._error(ConnectionClosed, f"connection lost ({last})", schedule)
        self._stats["timeouts"] += 1
        raise self._error(RequestTimeout, "no reply over tcp", schedule)

    def _error(
        self, kind: type[RequestFailed], message: str, schedule: RetrySchedule
    ) -> RequestFailed:
        return kind(
            message,
            address=format_address(self.server),
            attempts=schedule.attempts,
            elapsed=self._loop.time() - schedule.started,
        )

    async def _attempt(self, payload: bytes, schedule: RetrySchedule) -> bytes:
        remaining = schedule.remaining(self._loop.time())
        async with asyncio.timeout(remaining):
            connection = await self._connected()
            assert connection.transport is not None
            waiter: asyncio.Future[bytes] = self._loop.create_future()
            connection.waiting.append(waiter)
            self._stats["transmissions"] += 1
            connection.transport.write(connection.framer.frame(payload))
            # Shielded: a timed-out request keeps its place in the reply order.
            reply = await asyncio.shield(waiter)
        if reply.startswith(b"error: ") and not self.matcher.matches(payload, reply):
            raise UnexpectedReply(f"server error {reply.decode('utf-8', 'replace')!r}")
        if not self.matcher.matches(payload, reply):
            self._stats["unexpected"] += 1
            raise UnexpectedReply(f"reply {reply[:80]!r} does not match the request")
        return reply

    async def _connected(self) -> _TcpConnection:
        connection = self._connection
        if connection is not None and connection.lost is None:
            return connection
        if self._connecting is None:
            self._connecting = self._loop.create_future()
            try:
                connection = await self._open_connection()
            except BaseException as exc:
                self._connecting.set_exception(exc)
                self._connecting.exception()
                raise
            finally:
                future, self._connecting = self._connecting, None
            future.set_result(connection)
            return connection
        return await asyncio.shield(self._connecting)

    async def _open_connection(self) -> _TcpConnection:
        def on_lost(lost: _TcpConnection) -> None:
            if self._connection is lost:
                self._connection = None

        _, connection = await self._loop.create_connection(
            lambda: _TcpConnection(self.framing, on_lost), self.server[0], self.server[1]
        )
        await connection.welcomed
        self._connection = connection
        return connection
