"""Tier (a): :class:`TcpSession`, one TCP connection's rules, with a hand-driven clock.

No socket, no event loop: the facts a reader reports go in, with ``now``;
what the session decides (and counts) comes out.
"""

from __future__ import annotations

import pytest

from udpkit.core.admission import Admission
from udpkit.core.counters import Counters
from udpkit.core.framing import Len16Framing, LineFraming
from udpkit.core.ratelimit import TokenBucketTable
from udpkit.core.sources import SourceClassifier, parse_networks
from udpkit.core.tcp_session import (
    ERR_TOO_LONG,
    MAX_RATE_PAUSE,
    Line,
    Paused,
    SessionLimits,
    TcpSession,
    Timeout,
)

LIMITS = SessionLimits(pipeline=4, idle_timeout=10.0, line_timeout=3.0, write_timeout=5.0)


def session(now: float = 100.0, max_line: int = 8) -> TcpSession:
    made = TcpSession(LineFraming(max_line), LIMITS, Counters(), now=now)
    made.admitted("198.51.100.1", None)
    return made


def test_a_request_moves_the_idle_clock_and_a_partial_line_starts_the_line_clock() -> None:
    s = session()
    assert (s.last_request, s.line_started) == (100.0, None)
    s.lines_read(2, 0, 101.0)
    assert (s.last_request, s.line_started) == (101.0, None)
    s.lines_read(1, 3, 102.0)  # a request, then the start of the next line
    assert (s.last_request, s.line_started) == (102.0, 102.0)
    s.lines_read(0, 0, 103.0)  # nothing left over: no line is running
    assert (s.last_request, s.line_started) == (102.0, None)


def test_a_slowloris_cannot_reset_the_line_clock_a_byte_at_a_time() -> None:
    """Regression: bytes that finish no line must leave the line clock where it began."""
    s = session()
    s.lines_read(0, 1, 101.0)
    for tick in range(2, 10):
        s.lines_read(0, tick, 100.0 + tick)
    assert s.line_started == 101.0
    assert s.check_timeouts(104.5) is Timeout.LINE
    assert s.counters.closed_slow == 1


def test_the_idle_timeout_waits_for_pending_replies() -> None:
    s = session()
    assert s.check_timeouts(110.0) is None  # not past it yet
    s.reply_queued()
    assert s.check_timeouts(111.0) is None  # an async reply is still due
    s.reply_written()
    assert s.check_timeouts(111.0) is Timeout.IDLE
    assert s.counters.closed_idle == 1


def test_a_write_stall_has_its_own_deadline_and_hides_the_others() -> None:
    s = session()
    assert s.write_blocked(101.0) is True  # reading must pause now
    assert s.paused == Paused.WRITING
    assert s.check_timeouts(105.5) is None  # idle would not fire, nor write yet
    assert s.check_timeouts(106.5) is Timeout.WRITE
    assert s.counters.closed_write_timeout == 1
    assert s.write_unblocked() is True
    assert s.write_stalled is None
    assert s.paused == Paused(0)


def test_reading_pauses_on_the_first_reason_and_resumes_after_the_last() -> None:
    s = session()
    assert s.simple
    assert s.pause(Paused.PIPELINE) is True
    assert s.pause(Paused.WRITING) is False  # paused already
    assert not s.simple
    assert s.resume(Paused.SHUTDOWN) is False  # never a reason: nothing to do
    assert s.resume(Paused.PIPELINE) is False  # still paused for writing
    assert s.resume(Paused.WRITING) is True
    assert s.simple


def test_the_pipeline_pauses_when_full_and_resumes_at_half() -> None:
    s = session()
    assert [s.reply_queued() for _ in range(4)] == [False, False, False, True]
    assert [s.reply_written() for _ in range(4)] == [False, False, True, True]
    assert s.pending == 0


def test_judge_counts_and_answers_empty_lines() -> None:
    s = session()
    assert s.judge(b"", 101.0) is Line.EMPTY
    assert s.judge(b"hi", 101.0) is Line.HANDLE
    snapshot = s.counters.snapshot()
    assert (snapshot.received, snapshot.dropped_empty) == (2, 1)


def test_a_limited_source_is_judged_by_its_bucket_and_an_exempt_one_never() -> None:
    classifier = SourceClassifier(exempt=parse_networks(["loopback"]))
    admission = Admission(classifier, TokenBucketTable(rate=1, burst=2, size=4))
    limited = session()
    limited.admitted("198.51.100.1", admission)
    exempt = session()
    exempt.admitted("127.0.0.1", admission)
    assert (limited.rate_limited, exempt.rate_limited) == (True, False)
    verdicts = [limited.judge(b"x", 100.0) for _ in range(3)]
    assert verdicts == [Line.HANDLE, Line.HANDLE, Line.RATE_LIMITED]
    assert limited.counters.dropped_rate_limited == 1
    assert [exempt.judge(b"x", 100.0) for _ in range(3)] == [Line.HANDLE] * 3


def test_exit_drops_what_follows_and_closing_happens_once() -> None:
    s = session()
    assert s.receive(b"a\nexit\nb\npart") == [b"a", b"exit", b"b"]
    assert s.judge(b"exit", 101.0) is Line.EXIT
    assert s.counters.received == 0  # not a request
    s.exit(1, 101.0)
    assert s.framing.pending() == 0
    assert (s.last_request, s.line_started) == (101.0, None)
    assert s.close_after_replies() is True
    assert s.close_after_replies() is False
    assert not s.simple


def test_an_oversize_line_is_counted_answered_and_stops_the_framing() -> None:
    s = session(max_line=4)
    assert s.receive(b"12345678") == []
    assert s.too_long
    assert s.oversize() == ERR_TOO_LONG + b"\n"
    snapshot = s.counters.snapshot()
    assert (snapshot.received, snapshot.dropped_oversize) == (1, 1)
    assert s.receive(b"ok\n") == []  # nothing is framed after it


def test_the_partial_line_is_lent_and_comes_back() -> None:
    s = session()
    assert s.receive(b"a\nhal") == [b"a"]
    assert s.lend_partial() == b"hal"
    assert s.framing.pending() == 0  # not held twice
    s.partial_returned(b"half")
    assert s.framing.pending() == 4


def test_a_proxy_header_is_due_within_the_line_timeout() -> None:
    s = TcpSession(LineFraming(8), LIMITS, Counters(), now=100.0)
    s.awaiting_header(100.0)
    assert s.check_timeouts(103.5) is Timeout.LINE
    s = TcpSession(LineFraming(8), LIMITS, Counters(), now=100.0)
    s.awaiting_header(100.0)
    s.admitted("198.51.100.1", None)  # the header came: its clock stops
    assert s.check_timeouts(103.5) is None


def test_a_turn_takes_at_most_turn_bytes_and_keeps_the_rest_in_order() -> None:
    """Issue 16, item 11: every byte a greedy client sent was handled in one callback.
    A turn now takes at most ``turn_bytes``; the rest is the backlog, first in line."""
    limits = SessionLimits(pipeline=4, idle_timeout=10.0, line_timeout=3.0,
                           write_timeout=5.0, turn_bytes=6)
    s = TcpSession(LineFraming(8), limits, Counters(), now=100.0)
    assert s.take_turn(b"ab\ncd\nef\n") == b"ab\ncd\n"
    assert s.unhandled == b"ef\n"
    assert s.turn_due
    s.pause(Paused.WRITING)  # another reason holds reading: not now
    assert not s.turn_due
    s.resume(Paused.WRITING)
    assert s.take_turn(b"gh\n") == b"ef\ngh\n"  # what came later goes behind it
    assert (s.backlog, s.turn_due) == (b"", False)


def test_turns_move_through_a_large_backlog_without_copying_it() -> None:
    limits = SessionLimits(pipeline=4, idle_timeout=10.0, line_timeout=3.0,
                           write_timeout=5.0, turn_bytes=3)
    s = TcpSession(LineFraming(8), limits, Counters(), now=100.0)
    data = b"".join(b"%02d\n" % i for i in range(20))
    turns = [s.take_turn(data)]
    buffer = s.backlog
    while s.backlog:
        assert s.backlog is buffer  # the same bytes, a moving start
        turns.append(s.take_turn(b""))
    assert turns == [b"%02d\n" % i for i in range(20)]
    assert s.backlog_start == 0
    assert limits.poll_bytes > limits.turn_bytes


def test_a_limited_line_pauses_until_a_grant_refills_and_holds_back_the_rest() -> None:
    """Issue 16, item 11: each line over the limit got its own error reply.  Now the
    session says when to read again, and the lines after it go back to the backlog."""
    admission = Admission(SourceClassifier(), TokenBucketTable(rate=100, burst=2, size=4))
    s = session()
    s.admitted("198.51.100.1", admission)
    messages = s.receive(b"a\nb\nc\nd\r\ne\npar")
    assert [s.judge(m, 100.0) for m in messages[:3]] == [Line.HANDLE, Line.HANDLE,
                                                          Line.RATE_LIMITED]
    assert s.refill_at == pytest.approx(100.02)  # a grant: 16 tokens, at most the burst
    s.hold_back(messages[3:])
    assert (s.unhandled, s.framing.pending()) == (b"d\ne\npar", 0)
    s.pause(Paused.RATE)
    assert not pause_state(s)[1]  # waiting for tokens: the backlog is not due
    assert s.tokens_refilled() is True
    assert pause_state(s) == (None, True)
    assert s.counters.dropped_rate_limited == 1


def pause_state(s: TcpSession) -> tuple[float | None, bool]:
    return s.refill_at, s.turn_due


def test_a_very_low_rate_pauses_at_most_max_rate_pause() -> None:
    admission = Admission(SourceClassifier(), TokenBucketTable(rate=0.001, burst=1, size=4))
    s = session()
    s.admitted("198.51.100.1", admission)
    assert [s.judge(b"x", 100.0) for _ in range(2)] == [Line.HANDLE, Line.RATE_LIMITED]
    assert s.refill_at == 100.0 + MAX_RATE_PAUSE


def len16_session(max_line: int = 8) -> TcpSession:
    made = TcpSession(Len16Framing(max_line), LIMITS, Counters(), now=100.0)
    made.admitted("198.51.100.1", None)
    return made


def test_len16_has_no_exit_and_an_empty_message_is_counted_and_closes() -> None:
    s = len16_session()
    assert s.judge(b"exit", 100.0) is Line.HANDLE
    assert s.judge(b"", 100.0) is Line.EMPTY_CLOSE
    assert (s.counters.received, s.counters.dropped_empty) == (2, 1)
    assert session().judge(b"", 100.0) is Line.EMPTY  # a blank line goes on


def test_len16_messages_held_back_go_back_framed_before_the_partial_one() -> None:
    """After a rate-limited message, the ones not handled return to the backlog as
    they came, prefixes and all, and are framed again the same way next turn."""
    s = len16_session()
    messages = s.receive(b"\x00\x01a\x00\x02b\n\x00\x01c\x00")
    assert messages == [b"a", b"b\n", b"c"]
    s.hold_back(messages[1:])
    assert s.unhandled == b"\x00\x02b\n\x00\x01c\x00"
    assert s.receive(s.take_turn(b"")) == [b"b\n", b"c"]
    assert s.framing.pending() == 1


def test_len16_turns_cut_anywhere_and_the_partial_message_is_lent_and_returned() -> None:
    s = len16_session()
    s.limits = SessionLimits(pipeline=4, idle_timeout=10.0, line_timeout=3.0,
                             write_timeout=5.0, turn_bytes=3)
    first = s.take_turn(b"\x00\x02hi\x00\x02ho")
    assert first == b"\x00\x02h"
    assert s.receive(first) == []
    assert s.lend_partial() == b"\x00\x02h"
    s.partial_returned(b"\x00\x02h")
    assert s.receive(s.take_turn(b"")) == [b"hi"]
    assert s.receive(s.take_turn(b"")) == [b"ho"]
    assert not s.backlog
