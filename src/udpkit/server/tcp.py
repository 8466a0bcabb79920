"""TCP glue: one :class:`TcpConnection` protocol per client.

Rule: framing is the sans-IO :mod:`udpkit.core.framing`; this module only
feeds it and writes replies, in request order.  Sync handlers answer inline;
once an async handler is pending, later replies queue behind it so order is
kept.  A client that does not read its replies is paused (``pause_writing``
pauses reading), so one slow or silent client never holds anyone else up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from udpkit.core.counters import Counters
from udpkit.core.framing import EXIT, Framing, error_message
from udpkit.core.handler import Handler, Peer, Reply
from udpkit.server.dispatch import check_reply, is_awaitable, log_handler_error
from udpkit.server.logs import log_access, server_log

_CLOSE = object()
"""Queue marker: close the connection once everything before it is written."""

ERR_EMPTY = error_message("empty request")
ERR_TOO_LONG = error_message("request too long")
ERR_HANDLER = error_message("handler failed")


class TcpConnection(asyncio.Protocol):
    """One client connection: frames requests, answers them in order."""

    def __init__(
        self,
        handler: Handler,
        counters: Counters,
        framing: Framing,
        *,
        pipeline: int,
        access_log: bool,
        on_close: Callable[[TcpConnection], None],
    ) -> None:
        self.handler = handler
        self.counters = counters
        self.framing = framing
        self.pipeline = pipeline
        self.access_log = access_log
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        # In request order: a Future (async handler), (wire, is_reply) or _CLOSE.
        self._queue: deque[object] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self._reading_paused_by: set[str] = set()
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = Peer(transport.get_extra_info("peername"), "tcp")
        self.counters.connections_opened += 1
        transport.write(self.framing.welcome)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        framing = self.framing
        for message in framing.feed(data):
            if message == EXIT:
                self._close_after_replies()
                return
            self._handle(message)
        if framing.too_long:
            self.counters.received += 1
            self.counters.dropped_oversize += 1
            self._write(framing.frame(ERR_TOO_LONG), is_reply=False)
            self._close_after_replies()

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what it sent, then close.
        self._close_after_replies()
        return True  # keep the write side open until the replies are out

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._drainer is not None:
            self._drainer.cancel()
        for item in self._queue:  # replies that can no longer be written
            if isinstance(item, asyncio.Future):
                item.cancel()
                self.counters.send_errors += 1
            elif isinstance(item, tuple) and item[1]:
                self.counters.send_errors += 1
        self._queue.clear()
        self.counters.connections_closed += 1
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_close(self)

    def pause_writing(self) -> None:
        self._pause_reading("writing")

    def resume_writing(self) -> None:
        self._resume_reading("writing")

    # -- life cycle used by the server ----------------------------------------

    def stop_reading(self) -> None:
        """Take no new requests; the ones received are still answered."""
        self._pause_reading("shutdown")
        self._close_after_replies()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- requests -------------------------------------------------------------

    def _handle(self, message: bytes) -> None:
        counters = self.counters
        counters.received += 1
        peer = self.peer
        assert peer is not None
        if not message:
            counters.dropped_empty += 1
            self._write(self.framing.frame(ERR_EMPTY), is_reply=False)
            return
        if self.access_log:
            log_access(peer, message)
        try:
            result = self.handler(message, peer)
            if type(result) is not bytes and is_awaitable(result):
                self._queue_pending(result)  # type: ignore[arg-type]
                return
            reply = check_reply(result, peer)
        except Exception as exc:
            counters.handler_errors += 1
            log_handler_error(peer, exc)
            self._write(self.framing.frame(ERR_HANDLER), is_reply=False)
            return
        if reply is None:
            counters.no_reply += 1
        else:
            self._write(self.framing.frame(reply), is_reply=True)

    def _write(self, wire: bytes, *, is_reply: bool) -> None:
        """Write now, or behind pending async replies; count a reply once written."""
        if self._queue:
            self._queue.append((wire, is_reply))
        elif self.transport is not None:
            self.transport.write(wire)
            if is_reply:
                self.counters.replied += 1

    def _queue_pending(self, pending: Awaitable[Reply]) -> None:
        self._queue.append(asyncio.ensure_future(pending))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if len(self._queue) >= self.pipeline:
            self._pause_reading("pipeline")

    def _close_after_replies(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._pause_reading("closing")
        if self._queue:
            self._queue.append(_CLOSE)
        elif self.transport is not None:
            self.transport.close()

    async def _drain(self) -> None:
        """Write queued replies in request order, awaiting async handlers."""
        queue = self._queue
        counters = self.counters
        peer = self.peer
        assert peer is not None
        assert self.transport is not None
        while queue:
            item = queue[0]
            if item is _CLOSE:
                queue.clear()
                self.transport.close()
                break
            if isinstance(item, asyncio.Future):
                try:
                    reply = check_reply(await item, peer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    counters.handler_errors += 1
                    log_handler_error(peer, exc)
                    wire: bytes | None = self.framing.frame(ERR_HANDLER)
                    is_reply = False
                else:
                    if reply is None:
                        counters.no_reply += 1
                    wire = None if reply is None else self.framing.frame(reply)
                    is_reply = True
            else:
                assert isinstance(item, tuple)
                wire, is_reply = item
            queue.popleft()
            if wire is not None:
                self.transport.write(wire)
                if is_reply:
                    counters.replied += 1
            if len(queue) < self.pipeline // 2:
                self._resume_reading("pipeline")
        self._drainer = None

    # -- flow control ---------------------------------------------------------

    def _pause_reading(self, reason: str) -> None:
        transport = self.transport
        if not self._reading_paused_by and transport is not None and not transport.is_closing():
            transport.pause_reading()
        self._reading_paused_by.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason not in self._reading_paused_by:
            return
        self._reading_paused_by.discard(reason)
        transport = self.transport
        if not self._reading_paused_by and transport is not None and not transport.is_closing():
            transport.resume_reading()


def log_connection_error(peer: Peer | None, exc: BaseException) -> None:
    server_log.debug("TCP connection %s ended: %s", peer, exc)
