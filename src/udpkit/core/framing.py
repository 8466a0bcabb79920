"""How a TCP byte stream becomes messages, and how replies go back on it.

Rule: framing is pure and incremental; any split of the same bytes into
segments yields the same messages (a property test checks it).  A message over
the limit stops the framer for good: the connection answers with an error and
closes, it never guesses where the next message starts.

Two framings:

* :class:`LineFraming` (default): ``Welcome!\\n`` on connect, one message per
  ``\\n`` or ``\\r\\n`` terminated line, each reply followed by ``\\n``.
* :class:`RawFraming`: the tutorial's lock-step protocol, ``Welcome!`` without
  a newline and each received chunk taken as one message.
"""

from __future__ import annotations

from typing import Literal, Protocol

FramingName = Literal["line", "raw"]

EXIT = b"exit"
"""The message that asks the server to close the connection (the tutorial's)."""


class Framing(Protocol):
    """The sans-IO side of one TCP connection's framing."""

    welcome: bytes
    too_long: bool
    """Set once a message over the limit arrived; nothing is framed after it."""

    def feed(self, data: bytes) -> list[bytes]:
        """Take received bytes; return the complete messages they finish."""
        ...

    def frame(self, reply: bytes) -> bytes:
        """Wrap a reply for the wire."""
        ...

    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete message."""
        ...


class LineFraming:
    """Newline-delimited messages: ``\\n`` or ``\\r\\n``, the terminator stripped."""

    welcome = b"Welcome!\n"

    __slots__ = ("max_line", "partial", "too_long")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.partial = b""
        """The unfinished line so far.  A caller that splits lines itself (the C
        fast path of the TCP server) takes it, and puts back what it left over
        after checking it against the limit as :meth:`feed` does."""
        self.too_long = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_long:
            return []
        buffer = self.partial + data if self.partial else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self.partial = buffer
            self._check_partial()
            return []
        self.partial = buffer[end + 1 :]
        lines = buffer[:end].split(b"\n")
        limit = self.max_line
        for index, line in enumerate(lines):
            if line.endswith(b"\r"):
                line = lines[index] = line[:-1]
            if len(line) > limit:
                self.too_long = True
                self.partial = b""
                return lines[:index]
        self._check_partial()
        return lines

    def _check_partial(self) -> None:
        # A partial line may still end in the "\r" of its "\r\n".
        if len(self.partial) > self.max_line + 1:
            self.too_long = True
            self.partial = b""

    def stop(self) -> None:
        """A line over the limit was found by a caller splitting lines itself."""
        self.too_long = True
        self.partial = b""

    def frame(self, reply: bytes) -> bytes:
        return reply + b"\n"

    def pending(self) -> int:
        return len(self.partial)


class RawFraming:
    """Each received chunk is one message: the tutorial's lock-step TCP protocol."""

    welcome = b"Welcome!"

    __slots__ = ("max_line", "too_long")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.too_long = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_long:
            return []
        if len(data) > self.max_line:
            self.too_long = True
            return []
        return [data]

    def frame(self, reply: bytes) -> bytes:
        return reply

    def pending(self) -> int:
        return 0


def make_framing(name: FramingName, *, max_line: int) -> Framing:
    if name == "line":
        return LineFraming(max_line)
    if name == "raw":
        return RawFraming(max_line)
    raise ValueError(f"unknown TCP framing {name!r} (expected 'line' or 'raw')")


def error_message(reason: str) -> bytes:
    """The body of an error reply; the framing adds the terminator."""
    return b"error: " + reason.encode("ascii")
