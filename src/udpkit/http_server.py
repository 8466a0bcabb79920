"""The small HTTP/1.1 endpoints udpkit serves (the proxy's control API, ``/metrics``),
on the event loop, bounded in every dimension a client controls.

Rule: a scraper or an attacker gets the same treatment.  Each connection carries one
request (``Connection: close``) and has ``request_timeout`` for all of it: an idle
connection is closed with a 408 when that runs out, never held.  At most
``max_connections`` are open at once; one more is answered 503 at once and closed, so
neither threads nor file descriptors grow with what clients leave open.  Head and body
are bounded; the head is decoded by :mod:`udpkit.core.http_request`.  Every outcome is
counted in :class:`HttpStats`; nothing a client sends stops the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from udpkit.core.errors import BadInput, UsageError
from udpkit.core.handler import format_address
from udpkit.core.http_request import RequestHead, Response, error, parse_head_untrusted

Router = Callable[[RequestHead, bytes], Response | Awaitable[Response]]
"""What an endpoint answers: the request head and body in, a whole response out (or a
coroutine giving it, for a router that must wait, e.g. to bind a socket)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """What one endpoint lets a client use."""

    max_head: int = 16 * 1024
    """Bytes of request line and headers."""
    max_body: int = 64 * 1024
    """Bytes of body (its Content-Length)."""
    request_timeout: float = 10.0
    """Seconds from accepting a connection to the last byte of the response."""
    max_connections: int = 64
    """Connections open at once; one more is answered 503 and closed."""


@dataclass(slots=True)
class HttpStats:
    """What the endpoint did (plain counters, read by tests and summaries)."""

    served: int = 0
    """Requests answered 2xx."""
    rejected: int = 0
    """Requests answered 4xx: malformed, too large, unknown path or method."""
    timed_out: int = 0
    """Connections closed (408) because the request was not whole in time."""
    busy: int = 0
    """Connections answered 503 because ``max_connections`` were open."""
    failed: int = 0
    """Requests whose router raised (a bug: 500, reported through ``on_error``)."""


class HttpEndpoint:
    """Serve ``router`` on one listening socket of the running event loop."""

    def __init__(
        self,
        router: Router,
        *,
        name: str,
        limits: HttpLimits = HttpLimits(),
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.router = router
        self.name = name
        self.limits = limits
        self.stats = HttpStats()
        self.port: int | None = None
        self._on_error = on_error
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None  # bound, until the loop serves it
        self._connections: set[asyncio.Task[None]] = set()

    def listen(self, host: str, port: int) -> int:
        """Bind ``host:port`` now (0: any free port) and serve from the running loop;
        the port, or :class:`UsageError` saying why it cannot be had."""
        loop = asyncio.get_running_loop()
        try:
            family, _, _, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.create_server(address, family=family,
                                        backlog=self.limits.max_connections)
        except OSError as exc:  # create_server appends the address to strerror: say it once
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise UsageError(f"cannot serve {self.name} on {format_address((host, port))}: "
                             f"{reason}") from None
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._starting = loop.create_task(self._start_serving(sock))
        return self.port

    async def start(self, host: str, port: int) -> int:
        """:meth:`listen`, then wait until it accepts."""
        port = self.listen(host, port)
        assert self._starting is not None
        await self._starting
        return port

    async def _start_serving(self, sock: socket.socket) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, sock=sock, backlog=self.limits.max_connections
        )
        self._socket = None  # the server's now

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limits.max_head, loop=loop)
        return asyncio.StreamReaderProtocol(reader, self._accepted, loop=loop)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.limits.max_connections:
            self.stats.busy += 1
            writer.write(error(503, f"more than {self.limits.max_connections} connections "
                                    "open; try again").encode())
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout = self.limits.request_timeout
        try:
            try:
                async with asyncio.timeout(timeout):
                    response = await self._read_and_route(reader)
            except TimeoutError:
                self.stats.timed_out += 1
                response = error(408, f"request not complete within {timeout:g} s")
            writer.write(response.encode())
            async with asyncio.timeout(timeout):
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or does not read: nothing more to do for it
        finally:
            writer.close()

    async def _read_and_route(self, reader: asyncio.StreamReader) -> Response:
        limits = self.limits
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return self._reject(error(431, f"request head longer than {limits.max_head} bytes"))
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise
            return self._reject(error(400, "request head ended early (no blank line)"))
        try:
            request = parse_head_untrusted(head[:-4])
            if "chunked" in request.headers.get("transfer-encoding", "").lower():
                return self._reject(error(411, "chunked bodies are not supported; "
                                               "send Content-Length"))
            length = request.content_length
        except BadInput as exc:
            return self._reject(error(400, str(exc)))
        if length > limits.max_body:
            return self._reject(error(413, f"body of {length} bytes exceeds {limits.max_body}"))
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            return self._reject(error(400, f"body shorter than its Content-Length of {length}"))
        try:
            answer = self.router(request, body)
            response = await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:  # a bug: say so, keep serving
            self.stats.failed += 1
            if self._on_error is not None:
                self._on_error(exc)
            return error(500, "internal error (reported in the log)")
        if response.status < 400:
            self.stats.served += 1
        else:
            self.stats.rejected += 1
        return response

    def _reject(self, response: Response) -> Response:
        self.stats.rejected += 1
        return response

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        """Stop listening and drop the connections in progress."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is not None:
            self._server.close()
        elif self._socket is not None:
            self._socket.close()
            self._socket = None
        for task in list(self._connections):
            task.cancel()

    async def wait_closed(self) -> None:
        self.close()
        tasks = list(self._connections)
        if tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

