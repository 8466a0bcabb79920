"""Which replies a TCP transport still holds, so that the ones it throws away are not
counted as replied.

Rule: ``replied`` means handed to the kernel (issue 16, item 15).  A reply is
counted when it is written to the transport; while the transport holds
bytes it has not sent (its write buffer is not empty), the ledger keeps the
writes still in that buffer, so that when the connection is aborted (a
timeout, a forced stop) or lost with bytes buffered, the replies among the
bytes thrown away move from ``replied`` to ``send_errors``, exactly.  Nothing
is kept while the buffer is empty (the normal case: one size check a write).
Once bytes were held, a later write finding the buffer empty is not told
(the callers look only to decide whether to call): the kept writes are then
trimmed to the last ``held`` bytes at the next write that leaves bytes held.
A connection aborted by the server is counted exactly (the buffer is looked at
just before); one the peer breaks while its buffer is full (writing paused) is
counted from the last look, the most it can have held; one broken with less
than the high-water mark held is not looked at (the transport has emptied its
buffer by then).

A write is kept with its count of replies when the writer knows it (Python
writes one reply or one error at a time), or ``None`` for a chunk of lines
the C line reader or poller framed: then each line is a reply unless it is
one of the server's own lines (an error, ``busy``, the welcome), which a
handler's reply could only imitate by being byte for byte the same.  With a
length-prefixed framing (len16) the chunk is walked message by message from
its first whole one (the poller says where, when its send stopped inside one).
"""

from __future__ import annotations

from collections import deque

from udpkit.core.framing import Framing
from udpkit.core.tcp_session import SERVER_LINES

_SERVER_LINES: dict[type, frozenset[bytes]] = {}


def server_lines(framing: Framing) -> frozenset[bytes]:
    """The lines the server writes that are not replies, framed (one set per framing)."""
    kind = type(framing)
    lines = _SERVER_LINES.get(kind)
    if lines is None:
        lines = _SERVER_LINES[kind] = frozenset(
            line for line in [framing.welcome, *map(framing.frame, SERVER_LINES)] if line
        )
    return lines


class WriteLedger:
    """The writes a transport may still hold, oldest first (see the module docstring)."""

    __slots__ = ("_entries", "_held", "_kept", "_prefix", "_server_lines")

    def __init__(self, server_lines: frozenset[bytes], prefix: int = 0) -> None:
        self._server_lines = server_lines
        """The framed lines that are not replies (errors, ``busy``, the welcome)."""
        self._prefix = prefix
        """The framing's length prefix (0: lines end at ``\\n``)."""
        self._entries: deque[tuple[bytes, int | None, int]] | None = None
        """Made at the first write that leaves bytes held (most connections never do)."""
        self._kept = 0
        """Bytes of the kept writes."""
        self._held = 0
        """The transport's buffer size when last looked at."""

    def wrote(self, held: int, wire: bytes, replies: int | None, lead: int = 0) -> None:
        """``wire`` was just written and the transport now holds ``held`` bytes (> 0; the
        caller looks, and calls only then); ``replies``: how many replies ``wire`` holds
        (``None``: count its lines, see the module docstring); ``lead``: with a length
        prefix, its bytes before the first whole message."""
        self._held = held
        entries = self._entries
        if entries is None:
            entries = self._entries = deque()
        entries.append((wire, replies, lead))
        self._kept += len(wire)
        # Forget the writes wholly sent: the buffer holds only the last `held` bytes
        # (writes kept from an earlier full spell are forgotten here too).
        while self._kept - len(entries[0][0]) >= held:
            self._kept -= len(entries.popleft()[0])

    def discarded(self, held: int | None = None) -> int:
        """The transport throws away its last ``held`` bytes (default: as many as it held
        when last looked at): how many replies were in them.  The ledger is emptied."""
        if held is None:
            held = self._held
        entries, self._entries = self._entries, None
        self._kept = self._held = 0
        if entries is None:
            return 0
        lost = 0
        for wire, replies, lead in reversed(entries):
            if held <= 0:
                break
            cut = max(0, len(wire) - held)  # wire[cut:] is thrown away
            held -= len(wire)
            if replies is None and self._prefix:
                lost += self._messages_ending_after(wire, cut, lead)
            elif replies is None:
                lost += self._replies_ending_after(wire, cut)
            elif cut < len(wire):
                lost += replies  # Python writes hold one reply, ended by their last byte
        return lost

    def _messages_ending_after(self, wire: bytes, cut: int, lead: int) -> int:
        """Replies among the length-prefixed messages of ``wire`` (the first whole one at
        ``lead``) whose last byte lies at or after ``cut``."""
        server_lines = self._server_lines
        count = 0
        if cut < lead and not any(s.endswith(wire[:lead]) for s in server_lines):
            count += 1  # the tail of a reply whose start went out earlier
        prefix, start, size = self._prefix, lead, len(wire)
        while start + prefix <= size:
            end = start + prefix + int.from_bytes(wire[start : start + prefix], "big")
            if end > cut and wire[start:end] not in server_lines:
                count += 1
            start = end
        return count

    def _replies_ending_after(self, wire: bytes, cut: int) -> int:
        """Replies among the lines of ``wire`` whose end lies at or after ``cut``."""
        start = wire.rfind(b"\n", 0, cut) + 1  # the line the cut falls in starts here
        lines = wire[start:].split(b"\n")[:-1]
        server_lines = self._server_lines
        count = 0
        for index, line in enumerate(lines):
            framed = line + b"\n"
            if framed in server_lines:
                continue
            if index == 0 and start == 0 and any(s.endswith(framed) for s in server_lines):
                continue  # the tail of a server line whose start went out earlier
            count += 1
        return count
