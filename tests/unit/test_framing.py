"""Tier (a): TCP framing, pure.  Any split of a stream gives the same messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.core.framing import LineFraming, RawFraming, make_framing


def feed_all(framing: LineFraming, chunks: list[bytes]) -> list[bytes]:
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
