"""Locust users for UDP and TCP-line request/response services (``pip install udpkit[locust]``).

Rule: the protocol is udpkit's, the I/O is Locust's.  A UDP request runs on the
sans-IO client core (:class:`~udpkit.core.exchange.DatagramClientCore`: one
deadline per request, retries, replies matched by content) and a TCP request
on the same reply rules and framing as :class:`udpkit.client.Client`; the glue
here only moves bytes through blocking sockets, which Locust's gevent makes
cooperative (asyncio cannot run in Locust's greenlets).  Every request is one
``request`` event in Locust's statistics: ``request_type`` ``UDP`` or ``TCP``,
its name, ``response_time`` in ms, ``response_length``, and on failure an
exception (:class:`~udpkit.core.errors.RequestTimeout`, ``RequestRefused``,
``UnexpectedReply``, ``ConnectionClosed``), so Locust's master/worker mode
spreads the load over machines and adds up the figures.

``import udpkit`` never imports this module (nor Locust).  A locustfile::

    from udpkit.locust import UdpUser

    class Greeter(UdpUser):
        payload = "Michael {seq}"

then ``locust -f locustfile.py --host 127.0.0.1:9999``.  A user stopped in the
middle of a request (Locust's default ``--stop-timeout 0``) never reports it; give
``--stop-timeout`` to let the last requests finish and count.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import ClassVar

try:
    from locust import User, task
    from locust.env import Environment
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"udpkit.locust needs Locust: pip install 'udpkit[locust]' ({exc})"
                      ) from exc

from udpkit.apps import DEFAULT_APP, ReplyRuleLike, reply_rule
from udpkit.core.addresses import parse_host_port
from udpkit.core.errors import (
    ConnectionClosed,
    LocalProtocolError,
    RequestFailed,
    RequestRefused,
    RequestTimeout,
    UnexpectedReply,
)
from udpkit.core.exchange import Answered, DatagramClientCore
from udpkit.core.framing import LineFraming
from udpkit.core.handler import Address, TransportName
from udpkit.core.matching import ReplyRule
from udpkit.core.payloads import PayloadTemplate
from udpkit.core.retry import RetryPolicy, RetrySchedule

__all__ = ["TcpLineClient", "TcpLineUser", "UdpClient", "UdpUser", "UdpkitUser"]

DEFAULT_PORT = 9999
MAX_DATAGRAM = 65535
MAX_REPLY_LINE = 1 << 20
"""A TCP reply line longer than this is a protocol failure (the connection is dropped)."""


def parse_target(host: str | None) -> tuple[str, int]:
    """Locust's ``--host`` as udpkit reads a target: ``[HOST][:PORT]``, an optional
    ``udp://`` or ``tcp://`` in front (the class decides the transport)."""
    text = (host or "").strip()
    for scheme in ("udp://", "tcp://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    if not text:
        return ("127.0.0.1", DEFAULT_PORT)
    if ":" in text and not text.endswith("]"):
        return parse_host_port(text, allow_zero=False)
    return parse_host_port(text, default_port=DEFAULT_PORT)


def _resolve(host: str, port: int, kind: socket.SocketKind) -> tuple[socket.AddressFamily, Address]:
    try:
        info = socket.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        raise LocalProtocolError(f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr  # type: ignore[return-value]


class UdpClient:
    """Blocking UDP requests over one connected socket, driven by the client core."""

    transport: TransportName = "udp"

    def __init__(self, host: str, port: int, *, timeout: float, retries: int,
                 matcher: ReplyRule, rng: random.Random | None = None) -> None:
        family, server = _resolve(host, port, socket.SOCK_DGRAM)
        self.server = server
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.connect(server)  # only the server's datagrams, and ICMP refusals
        self._core = DatagramClientCore(
            server=server, matcher=matcher, policy=RetryPolicy(timeout=timeout, retries=retries),
            rng=rng)

    def exchange(self, payload: bytes) -> Answered:
        """Send ``payload``, wait for its reply; raise a ``RequestFailed`` otherwise."""
        core = self._core
        core.request(payload, now=time.monotonic())
        while True:
            for datagram in core.datagrams_to_send():
                try:
                    self._sock.send(datagram)
                except ConnectionRefusedError:
                    core.connection_refused(now=time.monotonic())
            event = core.next_event()
            if event is not None:
                if isinstance(event, Answered):
                    return event
                where = f"{self.server[0]}:{self.server[1]}"
                if event.cause == "protocol":
                    raise UnexpectedReply("reply does not match the request", address=where,
                                          attempts=event.attempts, elapsed=event.elapsed)
                kind = RequestTimeout if event.cause == "timeout" else RequestRefused
                what = "no reply over udp" if event.cause == "timeout" else "port closed"
                raise kind(what, address=where, attempts=event.attempts, elapsed=event.elapsed)
            timer = core.get_timer()
            wait = 0.0 if timer is None else timer - time.monotonic()
            if wait <= 0:
                core.handle_timer(time.monotonic())
                continue
            self._sock.settimeout(wait)
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                core.handle_timer(time.monotonic())
            except ConnectionRefusedError:
                core.connection_refused(now=time.monotonic())
            else:
                core.receive_datagram(data, self.server, now=time.monotonic())

    def close(self) -> None:
        self._sock.close()


class TcpLineClient:
    """Blocking TCP line requests: one connection, re-opened when it breaks; one
    deadline per request over the connect, the write and the reply."""

    transport: TransportName = "tcp"

    def __init__(self, host: str, port: int, *, timeout: float, retries: int,
                 matcher: ReplyRule, rng: random.Random | None = None) -> None:
        self.family, self.server = _resolve(host, port, socket.SOCK_STREAM)
        self._policy = RetryPolicy(timeout=timeout, retries=retries)
        self._matcher = matcher
        self._rng = rng if rng is not None else random.Random()
        self._sock: socket.socket | None = None
        self._framing = LineFraming(MAX_REPLY_LINE)
        self._lines: list[bytes] = []

    def exchange(self, payload: bytes) -> Answered:
        if b"\n" in payload or b"\r" in payload:
            raise LocalProtocolError("a TCP line request cannot contain a line break")
        schedule = RetrySchedule(self._policy, now=time.monotonic(), rng=self._rng)
        where = f"{self.server[0]}:{self.server[1]}"
        broken: OSError | None = None
        while schedule.can_retry(time.monotonic()):
            schedule.start_attempt(time.monotonic())
            try:
                reply = self._attempt(payload, schedule)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                    ConnectionClosed) as exc:
                self._drop()
                broken = exc  # the connection broke: a new one, another attempt
                continue
            except ConnectionRefusedError:
                self._drop()
                raise RequestRefused("connection refused", address=where,
                                     attempts=schedule.attempts,
                                     elapsed=time.monotonic() - schedule.started) from None
            except TimeoutError:
                self._drop()  # its reply may still come: it would answer the next request
                break
            elapsed = time.monotonic() - schedule.started
            if not self._matcher.matches(payload, reply):
                raise UnexpectedReply("reply does not match the request", address=where,
                                      attempts=schedule.attempts, elapsed=elapsed)
            return Answered(0, payload, reply, elapsed, schedule.attempts)
        elapsed = time.monotonic() - schedule.started
        if broken is not None and not schedule.expired(time.monotonic()):
            raise ConnectionClosed("connection lost", address=where, attempts=schedule.attempts,
                                   elapsed=elapsed)
        raise RequestTimeout("no reply over tcp", address=where, attempts=schedule.attempts,
                             elapsed=elapsed)

    def _attempt(self, payload: bytes, schedule: RetrySchedule) -> bytes:
        def remaining() -> float:
            left = schedule.remaining(time.monotonic())
            if left <= 0:
                raise TimeoutError
            return left

        if self._sock is None:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            sock.settimeout(remaining())
            sock.connect(self.server)
            self._read_line(remaining)  # the server's welcome line
        sock = self._sock
        sock.settimeout(remaining())
        sock.sendall(self._framing.frame(payload))
        return self._read_line(remaining)

    def _read_line(self, remaining: Callable[[], float]) -> bytes:
        assert self._sock is not None
        while not self._lines:
            self._sock.settimeout(remaining())
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionClosed("connection closed by the server")
            self._lines.extend(self._framing.feed(data))
            if self._framing.too_long:
                raise ConnectionClosed("reply line too long")
        return self._lines.pop(0)

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._framing = LineFraming(MAX_REPLY_LINE)
        self._lines = []

    def close(self) -> None:
        self._drop()


class RequestReporter:
    """``self.client`` of a user: each request goes to Locust's statistics."""

    def __init__(self, user: User, client: UdpClient | TcpLineClient) -> None:
        self._events = user.environment.events
        self._client = client
        self.request_type = client.transport.upper()

    def request(self, payload: bytes | str, *, name: str = "request") -> bytes | None:
        """Send one request; its reply, or ``None`` when it failed (reported as a
        failure with its exception, never raised into the task)."""
        data = payload.encode() if isinstance(payload, str) else payload
        started_at = time.time()
        started = time.perf_counter()
        reply: bytes | None = None
        exception: Exception | None = None
        try:
            reply = self._client.exchange(data).reply
        except RequestFailed as exc:
            exception = exc
        self._events.request.fire(
            request_type=self.request_type,
            name=name,
            start_time=started_at,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(reply) if reply is not None else 0,
            response=reply,
            context={},
            exception=exception,
        )
        return reply

    def close(self) -> None:
        self._client.close()


class UdpkitUser(User):
    """What the UDP and TCP users share: the target from ``--host``, the settings as
    class attributes, and a default task that sends :attr:`payload`."""

    abstract = True
    client_class: ClassVar[type[UdpClient] | type[TcpLineClient]] = UdpClient
    timeout: float = 1.0
    """Seconds one request may take, all its attempts included."""
    retries: int = 0
    """Further attempts within :attr:`timeout` (UDP: retransmissions; TCP: after a
    broken connection); 0 sends each request once."""
    expect: ReplyRuleLike = DEFAULT_APP
    """The reply rule: a built-in app's name, a regex with ``{seq}``, a ``ReplyRule``
    or a ``(request, reply) -> bool``."""
    payload: str = "locust {seq}"
    """What the default task sends; ``{seq}`` becomes the user's request number."""
    request_name: str = "request"
    """The name of the default task's requests in Locust's statistics."""
    target: str | None = None
    """``[HOST][:PORT]`` of this class's service, when it is not Locust's ``--host``
    (which Locust gives every user class)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        host, port = parse_target(self.target or self.host)
        client = self.client_class(host, port, timeout=self.timeout, retries=self.retries,
                                   matcher=reply_rule(self.expect))
        self.client = RequestReporter(self, client)
        self._template = PayloadTemplate(self.payload)
        self._seq = 0

    def on_stop(self) -> None:
        self.client.close()

    @task
    def send_payload(self) -> None:
        """The default task: one request with :attr:`payload`."""
        seq, self._seq = self._seq, self._seq + 1
        self.client.request(self._template.render(seq), name=self.request_name)


class UdpUser(UdpkitUser):
    """A Locust user sending UDP requests (``request_type`` ``UDP``)."""

    abstract = True
    client_class = UdpClient


class TcpLineUser(UdpkitUser):
    """A Locust user sending one-line requests over one TCP connection
    (``request_type`` ``TCP``)."""

    abstract = True
    client_class = TcpLineClient
