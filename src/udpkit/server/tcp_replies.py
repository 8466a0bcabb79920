"""One TCP connection's replies, written in request order.

Rule: a reply is written at once unless an async reply is due before it; then
it queues behind that one, and one drainer task writes the queue in order,
awaiting each async handler.  The connection's session counts what is pending
(and so decides when reading pauses for the pipeline); this class keeps the
queue, writes, and counts each reply once it is written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from udpkit.core.handler import Reply
from udpkit.core.tcp_session import ERR_HANDLER, ERR_TIMEOUT, Paused
from udpkit.server.dispatch import (
    HandlerTimeout,
    cancelled_from_outside,
    check_reply,
    log_handler_error,
)
from udpkit.server.tcp_requests import frame_reply

if TYPE_CHECKING:
    from udpkit.server.tcp import TcpConnection

_CLOSE = object()
"""Queue marker: close the connection once everything before it is written."""


class OrderedReplies:
    """The write side of one :class:`~udpkit.server.tcp.TcpConnection`."""

    __slots__ = ("_batch", "_connection", "_drainer", "_queue")

    def __init__(self, connection: TcpConnection) -> None:
        self._connection = connection
        # In request order: a Future (async handler), (wire, is_reply, arrived) or _CLOSE.
        self._queue: deque[object] = deque()
        self._drainer: asyncio.Task[None] | None = None
        # Replies to one received chunk, written with one write (one send, not one a line).
        self._batch: list[bytes] | None = None

    def write(self, wire: bytes, *, is_reply: bool, arrived: float) -> None:
        """Write now, or behind pending async replies; count a reply once written."""
        connection = self._connection
        if self._queue:
            self._queue.append((wire, is_reply, arrived))
            connection.session.reply_queued()
        elif connection.transport is not None:
            if self._batch is not None:
                self._batch.append(wire)
            else:
                transport = connection.transport
                transport.write(wire)
                held = transport.get_write_buffer_size()
                if held:  # kept while the transport holds bytes
                    connection.ledger.wrote(held, wire, 1 if is_reply else 0)
            if is_reply:
                connection.counters.replied += 1
                latency = connection.settings.latency
                if latency is not None:
                    latency.observe(connection.clock() - arrived)

    def start_batch(self) -> None:
        self._batch = []

    def flush_batch(self) -> None:
        batch, self._batch = self._batch, None
        transport = self._connection.transport
        if batch and transport is not None:
            wire = b"".join(batch)
            transport.write(wire)
            held = transport.get_write_buffer_size()
            if held:
                self._connection.ledger.wrote(held, wire, None)  # lines: counted by kind

    def queue_pending(self, pending: Awaitable[Reply], arrived: float) -> None:
        """An async handler's reply: later replies wait for it."""
        connection = self._connection
        calls = connection.settings.async_calls
        future = asyncio.ensure_future(calls.bounded(pending))
        calls.hold(future, connection.source_key)
        self._queue.append(future)
        latency = connection.settings.latency
        if latency is not None:
            clock = connection.clock
            future.add_done_callback(lambda _: latency.observe(clock() - arrived))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if connection.session.reply_queued():
            connection.pause_reading(Paused.PIPELINE)

    def close_when_written(self) -> None:
        transport = self._connection.transport
        if self._queue:
            self._queue.append(_CLOSE)
        elif transport is not None:
            transport.close()

    def cancel(self) -> None:
        """The connection is lost: what is still queued can never be written."""
        counters = self._connection.counters
        if self._drainer is not None:
            self._drainer.cancel()
        for item in self._queue:
            if isinstance(item, asyncio.Future):
                item.cancel()
                counters.send_errors += 1
            elif isinstance(item, tuple) and item[1]:
                counters.send_errors += 1
        self._queue.clear()

    async def _drain(self) -> None:
        """Write queued replies in request order, awaiting async handlers."""
        connection = self._connection
        queue, counters, peer, transport = (
            self._queue, connection.counters, connection.peer, connection.transport,
        )
        assert peer is not None
        assert transport is not None
        session = connection.session
        framing, latency = session.framing, connection.settings.latency
        while queue:
            item = queue[0]
            if item is _CLOSE:
                queue.clear()
                transport.close()
                break
            if isinstance(item, asyncio.Future):
                try:
                    reply = check_reply(await item, peer)
                    wire = None if reply is None else frame_reply(framing, reply, peer)
                except HandlerTimeout as exc:
                    counters.handler_timeouts += 1
                    log_handler_error(peer, exc)
                    wire = framing.frame(ERR_TIMEOUT)
                    is_reply = False
                except BaseException as exc:  # the handler's own CancelledError too
                    if isinstance(exc, asyncio.CancelledError) and cancelled_from_outside():
                        raise  # the connection is going: cancel() counts what is left
                    counters.handler_errors += 1
                    log_handler_error(peer, exc)
                    wire = framing.frame(ERR_HANDLER)
                    is_reply = False
                else:
                    if wire is None:
                        counters.no_reply += 1
                    is_reply = True
            else:
                assert isinstance(item, tuple)
                wire, is_reply, arrived = item
                if is_reply and latency is not None:
                    latency.observe(connection.clock() - arrived)
            queue.popleft()
            if wire is not None:
                transport.write(wire)
                held = transport.get_write_buffer_size()
                if held:
                    connection.ledger.wrote(held, wire, 1 if is_reply else 0)
                if is_reply:
                    counters.replied += 1
            if session.reply_written():
                connection.resume_reading(Paused.PIPELINE)
        self._drainer = None
