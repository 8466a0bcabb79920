"""Calling the handler, the same way for every transport.

Rule: a handler's result is bytes, ``None``, or an awaitable of either; any
other type, and any exception, is the handler's error: counted, logged with its
traceback, and the server goes on.  The log is rate-limited as abuse lines are
(a burst, then about one a second): a handler that always raises must not turn
every request into kilobytes of log, and the next line says how many were left out.
"""

from __future__ import annotations

import inspect
import time

from udpkit.core.handler import Peer, Reply
from udpkit.server import logs
from udpkit.server.logs import server_log

_clock = time.monotonic


class HandlerError(Exception):
    """A handler raised or returned something that is not a reply."""


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
    if isinstance(exc, HandlerError):
        server_log.error("%s%s", exc, more)
    else:
        server_log.error("handler failed for request from %s%s", peer, more, exc_info=exc)
