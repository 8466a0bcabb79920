"""Tier (a): TCP framing, pure.  Any split of a stream gives the same messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.core.framing import (
    FRAMINGS,
    Len16Framing,
    LineFraming,
    RawFraming,
    StreamFraming,
    framing_name,
    make_framing,
)


def feed_all(framing: StreamFraming, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framing.feed(chunk))
    return out


def test_lines_split_on_lf_and_crlf() -> None:
    framing = LineFraming(max_line=100)
    assert framing.feed(b"Michael\nTracy\r\nSar") == [b"Michael", b"Tracy"]
    assert framing.pending() == 3
    assert framing.feed(b"ah\n") == [b"Sarah"]
    assert framing.pending() == 0


def test_crlf_split_between_segments() -> None:
    framing = LineFraming(max_line=5)
    assert framing.feed(b"abcde\r") == []
    assert framing.feed(b"\n") == [b"abcde"]
    assert not framing.too_long


def test_line_over_limit_stops_the_framer_after_earlier_lines() -> None:
    framing = LineFraming(max_line=4)
    assert framing.feed(b"ok\ntoolong\nafter\n") == [b"ok"]
    assert framing.too_long
    assert framing.feed(b"more\n") == []


def test_partial_line_over_limit_is_detected_before_its_newline() -> None:
    """Regression: a peer that never sends a newline must not grow the buffer forever."""
    framing = LineFraming(max_line=8)
    assert framing.feed(b"x" * 9) == []
    assert not framing.too_long  # 9 bytes may still be 8 + "\r"
    assert framing.feed(b"x") == []
    assert framing.too_long
    assert framing.pending() == 0


def test_welcome_and_frame() -> None:
    assert LineFraming(1).welcome == b"Welcome!\n"
    assert LineFraming(1).frame(b"Hello, A!") == b"Hello, A!\n"
    assert RawFraming(1).welcome == b"Welcome!"
    assert RawFraming(1).frame(b"Hello, A!") == b"Hello, A!"


def test_raw_framing_takes_chunks_whole() -> None:
    framing = RawFraming(max_line=8)
    assert framing.feed(b"Michael") == [b"Michael"]
    assert framing.feed(b"a\nb") == [b"a\nb"]
    assert framing.feed(b"123456789") == []
    assert framing.too_long


def test_make_framing_rejects_unknown_names() -> None:
    assert isinstance(make_framing("line", max_line=3), LineFraming)
    assert isinstance(make_framing("raw", max_line=3), RawFraming)
    with pytest.raises(ValueError, match="unknown TCP framing"):
        make_framing("json", max_line=3)  # type: ignore[arg-type]


lines_strategy = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    max_size=20,
)


@given(lines=lines_strategy, cuts=st.lists(st.integers(min_value=0), max_size=30),
       crlf=st.booleans())
def test_any_split_gives_the_same_messages(
    lines: list[bytes], cuts: list[int], crlf: bool
) -> None:
    end = b"\r\n" if crlf else b"\n"
    stream = b"".join(line + end for line in lines)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all(LineFraming(max_line=64), chunks) == lines


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_arbitrary_bytes_frame_the_same_whole_or_split(data: bytes, cuts: list[int]) -> None:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = LineFraming(max_line=16)
    split = LineFraming(max_line=16)
    assert feed_all(whole, [data]) == feed_all(split, chunks)
    assert whole.too_long == split.too_long


# -- len16: two bytes of length, network order (RFC 1035 4.2.2, RFC 7766 8) --------------


def len16(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def test_len16_splits_on_the_prefix_and_keeps_the_unfinished_message() -> None:
    framing = Len16Framing(max_line=100)
    assert framing.feed(len16(b"Michael", b"a\nb\r\n") + b"\x00") == [b"Michael", b"a\nb\r\n"]
    assert framing.pending() == 1  # half a prefix
    assert framing.feed(b"\x05Tra") == []
    assert framing.pending() == 5
    assert framing.feed(b"cy") == [b"Tracy"]
    assert framing.pending() == 0
    assert not framing.too_long


def test_len16_has_no_welcome_no_exit_and_an_empty_message_closes() -> None:
    framing = Len16Framing(max_line=8)
    assert (framing.welcome, framing.exit, framing.empty_closes) == (b"", None, True)
    assert framing.feed(len16(b"exit", b"", b"x")) == [b"exit", b"", b"x"]
    assert framing.frame(b"Hello, A!") == b"\x00\x09Hello, A!"
    assert framing.frame(b"") == b"\x00\x00"
    assert framing.max_reply == 0xFFFF
    assert (LineFraming(1).exit, LineFraming(1).empty_closes) == (b"exit", False)


def test_len16_length_over_the_limit_stops_the_framer_at_its_prefix() -> None:
    """The prefix says it all: the message's bytes are not awaited (nor buffered)."""
    framing = Len16Framing(max_line=4)
    assert framing.feed(len16(b"ok") + b"\x00\x05") == [b"ok"]
    assert framing.too_long
    assert framing.pending() == 0
    assert framing.feed(len16(b"more")) == []
    at_limit = Len16Framing(max_line=4)
    assert at_limit.feed(len16(b"four")) == [b"four"]
    assert Len16Framing(max_line=65507).feed(b"\xff\xff") == []  # 65535 > the limit


def test_framing_names() -> None:
    assert FRAMINGS == ("line", "raw", "len16")
    assert [framing_name(name) for name in FRAMINGS] == list(FRAMINGS)
    assert isinstance(make_framing("len16", max_line=3), Len16Framing)
    with pytest.raises(ValueError, match="unknown TCP framing 'json'"):
        framing_name("json")


messages_strategy = st.lists(st.binary(max_size=40), max_size=20)


@given(messages=messages_strategy, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_len16_any_split_gives_the_same_messages(messages: list[bytes], cuts: list[int]) -> None:
    stream = len16(*messages)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    framing = Len16Framing(max_line=64)
    assert feed_all(framing, chunks) == messages
    assert framing.pending() == 0


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_len16_arbitrary_bytes_frame_the_same_whole_or_split(data: bytes, cuts: list[int]) -> None:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole = Len16Framing(max_line=16)
    split = Len16Framing(max_line=16)
    assert feed_all(whole, [data]) == feed_all(split, chunks)
    assert (whole.too_long, whole.pending()) == (split.too_long, split.pending())
    assert whole.pending() <= 2 + 16  # never more than one message and its prefix
