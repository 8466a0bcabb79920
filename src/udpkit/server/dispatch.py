"""Calling the handler, the same way for every transport.

Rule: a handler's result is bytes, ``None``, or an awaitable of either; any
other type, and any exception, is the handler's error: logged with its
traceback, counted, and the server goes on.
"""

from __future__ import annotations

import inspect

from udpkit.core.handler import Peer, Reply
from udpkit.server.logs import server_log


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


def log_handler_error(peer: Peer, exc: BaseException) -> None:
    if isinstance(exc, HandlerError):
        server_log.error("%s", exc)
    else:
        server_log.error("handler failed for request from %s", peer, exc_info=exc)
