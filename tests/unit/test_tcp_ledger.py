"""Tier (a): :class:`WriteLedger`, which replies a transport throws away (issue 16, item 15).

No socket: the writes and the transport's buffer size go in by hand.
"""

from __future__ import annotations

from udpkit.server.tcp_ledger import WriteLedger

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
