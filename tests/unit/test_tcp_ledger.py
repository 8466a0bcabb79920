"""Tier (a): :class:`WriteLedger`, which replies a transport throws away (issue 16, item 15).

No socket: the writes and the transport's buffer size go in by hand.
"""

from __future__ import annotations

from udpkit.core.framing import Len16Framing
from udpkit.server.tcp_ledger import WriteLedger, server_lines

SERVER_LINES = frozenset([b"Welcome!\n", b"error: empty request\n", b"busy\n"])


def test_nothing_is_kept_or_lost_when_nothing_was_held() -> None:
    assert WriteLedger(SERVER_LINES).discarded(0) == 0
    assert WriteLedger(SERVER_LINES).discarded() == 0


def test_replies_ending_in_the_thrown_away_tail_are_lost_and_server_lines_are_not() -> None:
    ledger = WriteLedger(SERVER_LINES)
    wire = b"Hello, a!\nerror: empty request\nHello, b!\nHello, c!\n"
    ledger.wrote(len(wire), wire, None)
    # The last 15 bytes: "o, b!\n" ends there (cut inside it) and "Hello, c!\n".
    assert ledger.discarded(15) == 2
    ledger.wrote(len(wire), wire, None)
    assert ledger.discarded(len(wire)) == 3  # every reply, not the error line


def test_python_writes_count_what_they_hold_once_any_byte_is_thrown_away() -> None:
    ledger = WriteLedger(SERVER_LINES)
    ledger.wrote(10, b"Hello, a!\n", 1)
    ledger.wrote(30, b"error: empty request\n", 0)  # buffer: 30 bytes, both writes
    ledger.wrote(35, b"Hello, b!\n", 1)  # 35 of 41: the first 6 bytes went out
    assert ledger.discarded(25) == 1  # b and the error, not a
    ledger.wrote(10, b"Hello, a!\n", 1)
    assert ledger.discarded(1) == 1


def test_writes_wholly_sent_are_forgotten() -> None:
    ledger = WriteLedger(SERVER_LINES)
    for _ in range(1000):
        ledger.wrote(10, b"Hello, a!\n", 1)  # the buffer never holds more than one
    assert ledger.discarded(10) == 1


def test_a_poller_remainder_that_starts_inside_a_line() -> None:
    """The C poller hands back what send() did not take, which may begin mid-line."""
    ledger = WriteLedger(SERVER_LINES)
    ledger.wrote(18, b"lo, a!\nHello, b!\n", None)
    assert ledger.discarded(18) == 2
    ledger.wrote(14, b"empty request\n", None)  # the tail of a server line: not a reply
    assert ledger.discarded(14) == 0


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


LEN16_SERVER_LINES = server_lines(Len16Framing(8))


def test_len16_replies_are_counted_message_by_message() -> None:
    """A reply may hold any byte, ``\\n`` included: len16 writes are walked by prefix."""
    ledger = WriteLedger(LEN16_SERVER_LINES, 2)
    wire = framed(b"a\nb", b"error: empty request", b"\n\n", b"c")
    ledger.wrote(len(wire), wire, None)
    assert ledger.discarded(3) == 1  # "c" and its prefix
    ledger.wrote(len(wire), wire, None)
    assert ledger.discarded(len(wire)) == 3  # every reply, not the error
    assert b"" not in LEN16_SERVER_LINES  # len16 has no welcome


def test_a_len16_poller_remainder_starts_where_the_poller_says() -> None:
    """What the poller's send() did not take may begin inside a message: ``lead`` says
    where the first whole one starts (a tail of a server line is not a reply)."""
    ledger = WriteLedger(LEN16_SERVER_LINES, 2)
    ledger.wrote(8, b"b!" + framed(b"xyzw"), None, 2)
    assert ledger.discarded(8) == 2
    ledger.wrote(8, b"b!" + framed(b"xyzw"), None, 2)
    assert ledger.discarded(6) == 1  # the tail "b!" went out
    tail = b"empty request"
    ledger.wrote(20, tail + framed(b"x"), None, len(tail))
    assert ledger.discarded(20) == 1
