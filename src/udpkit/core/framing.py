"""How a TCP byte stream becomes messages, and how replies go back on it.

Rule: framing is pure and incremental; any split of the same bytes into
segments yields the same messages (a property test checks it).  A message over
the limit stops the framer for good: the connection answers with an error and
closes, it never guesses where the next message starts.

Three framings:

* :class:`LineFraming` (default): ``Welcome!\\n`` on connect, one message per
  ``\\n`` or ``\\r\\n`` terminated line, each reply followed by ``\\n``.
* :class:`RawFraming`: the tutorial's lock-step protocol, ``Welcome!`` without
  a newline and each received chunk taken as one message.
* :class:`Len16Framing`: each message preceded by its length in two bytes,
  network order, as DNS over TCP frames its messages (RFC 1035 section 4.2.2,
  RFC 7766 section 8); replies framed the same way.  A binary framing has no
  greeting and no ``exit`` (any payload is a message), and a zero-length
  message is not a blank line a person typed but a broken or hostile peer:
  it is answered and counted as an empty request, and the connection closes
  (:attr:`Framing.empty_closes`).

Line and len16 framing are *streamed* (:class:`StreamFraming`): a message may
span segments and many may come in one, so the unfinished one is kept
(:attr:`StreamFraming.partial`) and the C splitter (``tcp_lines.c``) can take
either, held equal to this module by property tests.
"""

from __future__ import annotations

from typing import Literal, Protocol

FramingName = Literal["line", "raw", "len16"]
FRAMINGS: tuple[FramingName, ...] = ("line", "raw", "len16")
"""Every framing's name, the default first (what ``--tcp-framing`` accepts)."""

EXIT = b"exit"
"""The message that asks the server to close the connection (the tutorial's)."""

LEN16_PREFIX = 2
"""Bytes of a len16 message's length prefix (an unsigned 16-bit, big-endian)."""
LEN16_MAX = 0xFFFF
"""The longest message a len16 prefix can announce (a longer reply cannot be sent)."""


class Framing(Protocol):
    """The sans-IO side of one TCP connection's framing."""

    name: FramingName
    welcome: bytes
    """Written when a connection is admitted (``b""``: nothing)."""
    exit: bytes | None
    """The message that asks the server to close (``None``: none does)."""
    empty_closes: bool
    """Whether an empty message, answered as on every framing, also closes the connection."""
    max_reply: int | None
    """The longest reply the framing can carry (``None``: any)."""
    prefix: int
    """Bytes of length prefix before each message (0: none)."""
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


class StreamFraming:
    """A framing whose messages may span segments (line, len16): it keeps the
    unfinished one, which a C splitter may borrow."""

    name: FramingName
    welcome: bytes
    exit: bytes | None
    empty_closes: bool
    max_reply: int | None
    prefix: int
    """Bytes of length prefix before each message (0: a terminator ends it instead)."""

    __slots__ = ("max_line", "partial", "too_long")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.partial = b""
        """The unfinished message so far (len16: with its prefix).  A caller that splits
        messages itself (the C fast path of the TCP server) takes it, and puts back what
        it left over after checking it against the limit as :meth:`feed` does."""
        self.too_long = False

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def frame(self, reply: bytes) -> bytes:
        raise NotImplementedError

    def stop(self) -> None:
        """A message over the limit was found by a caller splitting messages itself."""
        self.too_long = True
        self.partial = b""

    def pending(self) -> int:
        return len(self.partial)


class LineFraming(StreamFraming):
    """Newline-delimited messages: ``\\n`` or ``\\r\\n``, the terminator stripped."""

    name: FramingName = "line"
    welcome = b"Welcome!\n"
    exit: bytes | None = EXIT
    empty_closes = False
    max_reply: int | None = None
    prefix = 0

    __slots__ = ()

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

    def frame(self, reply: bytes) -> bytes:
        return reply + b"\n"


class Len16Framing(StreamFraming):
    """Length-prefixed messages: two bytes of length, network order, then the message
    (RFC 1035 section 4.2.2; RFC 7766 section 8).  A prefix announcing more than
    ``max_line`` stops the framer at once, before the message's bytes arrive."""

    name: FramingName = "len16"
    welcome = b""
    exit: bytes | None = None
    empty_closes = True
    max_reply: int | None = LEN16_MAX
    prefix = LEN16_PREFIX

    __slots__ = ()

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_long:
            return []
        buffer = self.partial + data if self.partial else data
        size = len(buffer)
        limit = self.max_line
        messages: list[bytes] = []
        start = 0
        while size - start >= LEN16_PREFIX:
            length = buffer[start] << 8 | buffer[start + 1]
            if length > limit:
                self.too_long = True
                self.partial = b""
                return messages
            end = start + LEN16_PREFIX + length
            if end > size:
                break
            messages.append(buffer[start + LEN16_PREFIX : end])
            start = end
        self.partial = buffer[start:] if start else buffer
        return messages

    def frame(self, reply: bytes) -> bytes:
        """The reply with its prefix; the caller checks it fits (:attr:`max_reply`)."""
        return len(reply).to_bytes(LEN16_PREFIX, "big") + reply


class RawFraming:
    """Each received chunk is one message: the tutorial's lock-step TCP protocol."""

    name: FramingName = "raw"
    welcome = b"Welcome!"
    exit: bytes | None = EXIT
    empty_closes = False
    max_reply: int | None = None
    prefix = 0

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


def framing_name(text: str) -> FramingName:
    """``text`` as a framing's name; ``ValueError`` if it names none."""
    for name in FRAMINGS:
        if text == name:
            return name
    raise ValueError(f"unknown TCP framing {text!r} (expected {', '.join(FRAMINGS)})")


def make_framing(name: FramingName, *, max_line: int) -> Framing:
    if name == "line":
        return LineFraming(max_line)
    if name == "raw":
        return RawFraming(max_line)
    if name == "len16":
        return Len16Framing(max_line)
    raise ValueError(f"unknown TCP framing {name!r} (expected {', '.join(FRAMINGS)})")


STREAMED: frozenset[str] = frozenset(
    name for name in FRAMINGS if isinstance(make_framing(name, max_line=1), StreamFraming)
)
"""The framings of :class:`StreamFraming` (the ones the C splitter takes)."""


def error_message(reason: str) -> bytes:
    """The body of an error reply; the framing adds the terminator."""
    return b"error: " + reason.encode("ascii")
