"""Accepting TCP connections, with a back-off when the process runs out of descriptors.

Rule: out of file descriptors (or kernel memory), a server stops asking for connections
for a while, says so about once a second, and takes them again when it can; it never
spins on a listening socket that stays readable.  asyncio's selector loop (CPython 3.11)
does spin: after an ``EMFILE`` its accept callback goes on calling ``accept()`` up to
``backlog`` times and schedules one retry per failure, so a full descriptor table became
~70,000 "socket.accept() out of system resource" errors in 6 s, and each retry left
behind fired on a closed socket at shutdown ("Invalid file descriptor: -1").  On that
loop udpkit accepts itself (:class:`BackoffAcceptor`); uvloop's accept backs off
correctly and is faster, so there ``loop.create_server`` stays.  Clients that arrive
meanwhile wait in the kernel's listen queue, not in udpkit.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from typing import Protocol

from udpkit.core.loglimit import LogLimiter
from udpkit.server.logs import server_log

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_BACKOFF = 0.05
"""Seconds without accepting after the first failure; doubled per failure in a row."""
MAX_BACKOFF = 1.0
ACCEPTS_PER_CALLBACK = 128
"""Connections taken per loop callback, so a connection storm leaves the loop its turns."""


class TcpListener(Protocol):
    """What the server keeps of a listening socket: ``asyncio.Server`` or ours."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


async def listen_tcp(
    protocol_factory: Callable[[], asyncio.BaseProtocol], sock: socket.socket, *, backlog: int
) -> TcpListener:
    """Serve connections to the bound ``sock`` on the running loop."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):  # uvloop, proactor
        return await loop.create_server(protocol_factory, sock=sock, backlog=backlog)
    acceptor = BackoffAcceptor(loop, protocol_factory, sock, backlog=backlog)
    acceptor.start()
    return acceptor


class BackoffAcceptor:
    """Accept on a listening socket from the loop; pause, log and retry on exhaustion."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        *,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sock = sock
        self._backlog = backlog
        self._watching = False
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = FIRST_BACKOFF
        self._connecting: set[asyncio.Task[None]] = set()
        self._log = LogLimiter(per_second=1.0, burst=1)
        self.pauses = 0
        """Times accepting paused for want of descriptors or memory."""

    def start(self) -> None:
        self._sock.setblocking(False)
        self._sock.listen(self._backlog)
        self._watch()

    def _watch(self) -> None:
        self._retry = None
        if not self._watching and self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_CALLBACK):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(exc)
                else:
                    server_log.warning("TCP accept failed (%s); going on", exc)
                return
            self._backoff = FIRST_BACKOFF
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, sock=conn)
        except OSError:  # the client left before its transport was made
            conn.close()

    def _pause(self, exc: OSError) -> None:
        self._unwatch()
        self.pauses += 1
        delay, self._backoff = self._backoff, min(MAX_BACKOFF, self._backoff * 2)
        left_out = self._log.admit("accept", time.monotonic())
        if left_out is not None:
            server_log.warning(
                "Cannot accept TCP connections: %s; new clients wait in the listen queue, "
                "accepting again in %.2f s%s", exc.strerror or exc, delay,
                f" ({left_out} more pauses not logged)" if left_out else "",
            )
        self._retry = self._loop.call_later(delay, self._watch)

    def close(self) -> None:
        self._unwatch()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._connecting:
            await asyncio.wait(list(self._connecting), timeout=1.0)
