"""Calling the handler, the same way for every transport.

Rule: a handler's result is bytes, ``None``, or an awaitable of either; any
other type, and any exception, is the handler's error: counted, logged with its
traceback, and the server goes on.  "Any" means any ``BaseException``: a handler that
raises ``SystemExit``, ``KeyboardInterrupt`` or its own ``CancelledError`` has failed
like one that raises ``ValueError`` (Ctrl-C and SIGTERM reach the server as signals,
handled by :mod:`udpkit.signals`, never as exceptions out of a handler); only the
cancellation of the server's own task (a forced stop) is let through.

An async handler's call is bounded by :class:`AsyncCalls`: a deadline
(``handler_timeout``, counted as ``handler_timeouts``) and caps on how many run at
once, per transport and per source (:mod:`udpkit.core.inflight`, counted as
``dropped_overload``), so a handler that never returns cannot hold a connection or
grow memory without bound.  The log is rate-limited as abuse lines are
(a burst, then about one a second): a handler that always raises must not turn
every request into kilobytes of log, and the next line says how many were left out.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Hashable

from udpkit.core.handler import Peer, Reply
from udpkit.core.inflight import (
    HANDLER_TIMEOUT,
    MAX_PENDING,
    MAX_PENDING_PER_SOURCE,
    InFlight,
)
from udpkit.server import logs
from udpkit.server.logs import server_log

_clock = time.monotonic


class HandlerError(Exception):
    """A handler raised or returned something that is not a reply."""


class HandlerTimeout(Exception):
    """An async handler did not finish within the server's ``handler_timeout``."""


def cancelled_from_outside() -> bool:
    """Whether a ``CancelledError`` just caught is the running task's own cancellation
    (a forced stop), rather than one the handler raised or got from its own awaits."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def discard(result: object) -> None:
    """Drop an awaitable that will not be awaited, without a "never awaited" warning."""
    close = getattr(result, "close", None)
    if inspect.iscoroutine(result) and close is not None:
        close()
    elif isinstance(result, asyncio.Future):
        result.cancel()


class AsyncCalls:
    """The async handler calls of one transport: how many run, and for how long."""

    def __init__(
        self, *, timeout: float = HANDLER_TIMEOUT, max_total: int = MAX_PENDING,
        max_per_source: int = MAX_PENDING_PER_SOURCE,
    ) -> None:
        self.timeout = timeout
        """Seconds an async handler may take; 0: no limit."""
        self.inflight = InFlight(max_total=max_total, max_per_source=max_per_source)

    def try_take(self, source: Hashable) -> bool:
        return self.inflight.try_take(source)

    def hold(self, task: asyncio.Future[Reply] | asyncio.Task[None], source: Hashable) -> None:
        """``task`` runs one call taken with :meth:`try_take`: its slot is given back when
        the task is done, however it ends (cancelled before it started included)."""
        task.add_done_callback(lambda _: self.inflight.release(source))

    async def bounded(self, pending: Awaitable[Reply]) -> Reply:
        """Await the handler's call within the deadline; :class:`HandlerTimeout` past it."""
        if self.timeout <= 0:
            return await pending
        try:
            async with asyncio.timeout(self.timeout):
                return await pending
        except TimeoutError:
            if cancelled_from_outside():
                raise
            raise HandlerTimeout(f"handler did not finish within {self.timeout:g} s") from None


def check_reply(result: object, peer: Peer) -> Reply:
    """Normalise a finished handler result; raise :class:`HandlerError` if it is wrong."""
    if result is None or type(result) is bytes:
        return result
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    raise HandlerError(
        f"handler returned {type(result).__name__} for {peer}; expected bytes or None"
    )


def is_awaitable(result: object) -> bool:
    return inspect.isawaitable(result)


def is_async_handler(handler: object) -> bool:
    """Whether calling ``handler`` returns a coroutine: an ``async def`` function or an
    object whose ``__call__`` is one (a sync handler may still return awaitables)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


def log_handler_error(peer: Peer, exc: BaseException) -> None:
    """Log a handler's error (the caller counted it), unless too many came just now."""
    left_out = logs.handler_error_limiter.admit("handler", _clock())
    if left_out is None:
        return
    more = f" ({left_out} more handler errors not logged)" if left_out else ""
    if isinstance(exc, HandlerTimeout):
        server_log.error("%s for %s%s", exc, peer, more)
    elif isinstance(exc, HandlerError):
        server_log.error("%s%s", exc, more)
    else:
        server_log.error("handler failed for request from %s%s", peer, more, exc_info=exc)
