"""What one TCP line gets: the session's verdict, then the handler, then a reply or an
error line, written in request order.

Rule: every outcome is counted once, as on UDP (:mod:`udpkit.server.dispatch` says what a
handler failure is); the session has already judged the line (empty, rate limited, to
handle).  An awaitable result runs under the transport's :class:`~udpkit.server.dispatch.AsyncCalls`
(caps and deadline) and queues in :mod:`udpkit.server.tcp_replies`; beyond the caps the
line is answered ``error: overloaded`` and counted as ``dropped_overload``.  A reply the
framing cannot carry (over 65535 bytes on len16) is the handler's error, as a wrong type is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from udpkit.core.framing import Framing
from udpkit.core.handler import Peer
from udpkit.core.tcp_session import ERR_EMPTY, ERR_HANDLER, ERR_OVERLOADED, ERR_RATE_LIMITED, Line
from udpkit.server.dispatch import (
    HandlerError,
    check_reply,
    discard,
    is_awaitable,
    log_handler_error,
)
from udpkit.server.logs import log_abuse, log_access

if TYPE_CHECKING:
    from udpkit.server.tcp import TcpConnection


def frame_reply(framing: Framing, reply: bytes, peer: Peer) -> bytes:
    """``reply`` framed for the wire; :class:`HandlerError` if the framing cannot carry it."""
    limit = framing.max_reply
    if limit is not None and len(reply) > limit:
        raise HandlerError(
            f"handler returned {len(reply)} bytes for {peer}; {framing.name} framing carries"
            f" at most {limit}"
        )
    return framing.frame(reply)


class TcpRequests:
    """The handler side of one :class:`~udpkit.server.tcp.TcpConnection`."""

    __slots__ = ("_connection",)

    def __init__(self, connection: TcpConnection) -> None:
        self._connection = connection

    def handle(self, message: bytes, verdict: Line, now: float) -> None:
        connection = self._connection
        peer = connection.peer
        assert peer is not None
        if verdict is not Line.HANDLE:
            if verdict is Line.RATE_LIMITED:
                log_abuse("rate_limited", peer, now)
            error = ERR_RATE_LIMITED if verdict is Line.RATE_LIMITED else ERR_EMPTY
            connection.write(connection.session.framing.frame(error), is_reply=False)
            return
        if connection.settings.access_log:
            log_access(peer, message)
        try:
            result = connection.handler(message, peer)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the handler's
            self.handler_failed(exc)
            return
        if type(result) is bytes:
            try:
                wire = frame_reply(connection.session.framing, result, peer)
            except HandlerError as exc:
                self.handler_failed(exc)
                return
            connection.write(wire, is_reply=True)
        elif result is None:
            connection.counters.no_reply += 1
        else:
            self.handle_result(result)

    def handle_result(self, result: object) -> None:
        """A handler result that is neither bytes nor ``None``: an awaitable, a bytes-like
        object (taken as bytes) or a wrong type (the handler's error)."""
        connection = self._connection
        peer = connection.peer
        assert peer is not None
        try:
            if is_awaitable(result):
                arrived = connection.arrived
                if not connection.settings.async_calls.try_take(connection.source_key):
                    discard(result)
                    connection.counters.dropped_overload += 1
                    log_abuse("overload", peer, arrived)
                    connection.write(connection.session.framing.frame(ERR_OVERLOADED),
                                     is_reply=False)
                    return
                connection.replies.queue_pending(result, arrived)  # type: ignore[arg-type]
                return
            reply = check_reply(result, peer)
            wire = None if reply is None else frame_reply(connection.session.framing, reply, peer)
        except BaseException as exc:
            self.handler_failed(exc)
            return
        if wire is None:
            connection.counters.no_reply += 1
        else:
            connection.write(wire, is_reply=True)

    def handler_failed(self, exc: BaseException) -> None:
        connection = self._connection
        assert connection.peer is not None
        connection.counters.handler_errors += 1
        log_handler_error(connection.peer, exc)
        connection.write(connection.session.framing.frame(ERR_HANDLER), is_reply=False)
