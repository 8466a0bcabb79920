"""The hand-off of a TCP connection between its transport and the C ``LinePoller``.

Rule: a connection in the simple state (:attr:`TcpSession.simple`: nothing
pending, not closing, reading not paused) is read by the registry's one C
poller instead of its transport; the session stays the owner of its state.
While polled, the session's partial line is lent to the poller, the poller
reports each plain chunk to :meth:`TcpSession.lines_read` directly, and it
hands the connection back with one report (:meth:`PollerHandoff.handed_back`)
at the first thing that is not a plain read, handle and send.  Closing paths
take it off the poller first (:meth:`PollerHandoff.unpoll`), so the poller
never touches a socket the transport has closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from udpkit import _native
from udpkit.core.tcp_session import Paused

if TYPE_CHECKING:
    from udpkit.server.tcp import TcpConnection

TCP_POLLER_NAME = "connections read from one epoll set, lines split in C (C extension)"


class PollerHandoff:
    """One connection's seat at the poller (a :class:`udpkit._native.PolledConnection`)."""

    __slots__ = ("connection", "lines_read", "poller", "reader")

    def __init__(
        self, connection: TcpConnection, poller: _native.LinePoller, reader: _native.LineReader
    ) -> None:
        self.connection = connection
        self.poller = poller
        self.reader = reader
        # The poller's per-chunk report goes straight to the session: one call, no glue.
        self.lines_read = connection.session.lines_read

    def poll(self) -> None:
        """Let the poller read the connection, if it is simple and its transport idle."""
        connection = self.connection
        session = connection.session
        transport = connection.transport
        if not session.simple or transport is None or transport.get_write_buffer_size():
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        connection.pause_reading(Paused.POLLER)
        partial = session.lend_partial()
        try:
            self.poller.add(self.reader, sock.fileno(), self, partial)
        except BaseException:  # not polled after all: the transport reads on
            session.partial_returned(partial)
            connection.resume_reading(Paused.POLLER)
            raise

    def unpoll(self, *, resume: bool) -> None:
        """Take reading back from the poller (``resume``: hand it to the transport)."""
        session = self.connection.session
        if not session.paused & Paused.POLLER:
            return
        partial = self.poller.remove(self.reader)
        session.partial_returned(partial if partial is not None else b"")
        if resume:
            self.connection.resume_reading(Paused.POLLER)
        else:
            session.resume(Paused.POLLER)

    def handed_back(
        self, kind: int, unsent: bytes, status: int, taken: int, rest: bytes, extra: object,
        now: float,
    ) -> None:
        """The poller let go (see :class:`udpkit._native.PolledConnection`): finish what
        it could not, then read through the transport again."""
        connection = self.connection
        session = connection.session
        ours = session.resume(Paused.POLLER)  # False: Python took it back meanwhile
        done = status == _native.LINES_DONE
        session.partial_returned(rest if done else b"")
        if done and taken:  # read after Python took it back: not reported yet
            session.lines_read(taken, len(rest), now)
        transport = connection.transport
        if transport is None or transport.is_closing():  # closed while a handler ran
            return
        if unsent:
            # May begin inside a line the poller sent (len16: C says where the next starts).
            connection.write_lines(unsent, self.reader.unsent_lead)
        if kind == _native.HAND_FAILED:  # reported as unraisable by the poller
            session.abort()
            connection.abort()
            return
        if kind == _native.HAND_UNUSUAL:
            connection.after_stop(status, taken, rest, extra, now)
            connection.end_turn()
        if ours and not session.paused and not transport.is_closing():
            transport.resume_reading()
