"""When a TCP connection's held-back requests get their next turn on the event loop.

Rule: the session decides how much of a connection's input one turn may take
(:meth:`~udpkit.core.tcp_session.TcpSession.take_turn`) and when a rate-limited source
may go on (``refill_at``); this module only schedules: the backlog's next turn with
``call_soon`` (so UDP and other clients get the loop in between) and the end of a rate
pause with ``call_later``, reading paused meanwhile.  At most one of each is pending
per connection, and both are cancelled when the connection goes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from udpkit.core.tcp_session import Paused

if TYPE_CHECKING:
    from udpkit.server.tcp import TcpConnection


class TurnScheduler:
    """The pending turn and rate pause of one :class:`~udpkit.server.tcp.TcpConnection`."""

    __slots__ = ("_connection", "_refill", "_turn")

    def __init__(self, connection: TcpConnection) -> None:
        self._connection = connection
        self._turn: asyncio.Handle | None = None
        self._refill: asyncio.TimerHandle | None = None

    def end_turn(self) -> None:
        """After a turn: what the session kept back waits for the next turn (reading
        paused meanwhile), after the rate pause if there is one."""
        connection = self._connection
        session = connection.session
        if session.closing:
            return
        if session.backlog:
            connection.pause_reading(Paused.TURN)
            self.turn_soon()
        elif session.paused & Paused.TURN:
            connection.resume_reading(Paused.TURN)

    def turn_soon(self) -> None:
        if self._turn is None and self._connection.session.turn_due:
            self._turn = asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        if self._connection.session.turn_due:
            self._connection.data_received(b"")  # the backlog's turn

    def wait_for_tokens(self) -> None:
        """A line was over the rate: read nothing more until the session's ``refill_at``."""
        connection = self._connection
        refill_at = connection.session.refill_at
        if refill_at is None or self._refill is not None:
            return
        connection.pause_reading(Paused.RATE)
        self._refill = asyncio.get_running_loop().call_later(
            max(0.0, refill_at - connection.clock()), self._tokens_refilled
        )

    def _tokens_refilled(self) -> None:
        self._refill = None
        connection = self._connection
        session = connection.session
        if session.closing:
            return
        if session.backlog:
            connection.pause_reading(Paused.TURN)  # the backlog first, then the socket
        if session.tokens_refilled():
            connection.transport_reading(True)
        self.turn_soon()
        if connection.handoff is not None:
            connection.handoff.poll()

    def cancel(self) -> None:
        for handle in (self._turn, self._refill):
            if handle is not None:
                handle.cancel()
        self._turn = self._refill = None
