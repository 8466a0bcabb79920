"""Tier (a): what reaches a log line from the network is escaped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from udpkit.core.escaping import escape_untrusted


def test_control_characters_and_invalid_utf8_are_escaped() -> None:
    assert escape_untrusted(b"Mi\x1b[31m\n\xff") == "Mi\\x1b[31m\\n\\xff"
    assert escape_untrusted("a\u202eb") == "a\\u202eb"
    assert escape_untrusted(b"\\x41") == "\\\\x41"  # a literal backslash cannot fake an escape


def test_readable_text_stays_readable() -> None:
    assert escape_untrusted("Zoë Sarah") == "Zoë Sarah"


def test_long_input_is_cut() -> None:
    assert escape_untrusted(b"a" * 500, limit=10) == "a" * 10 + "..."


@given(st.binary(max_size=300))
def test_output_is_always_printable_on_one_line(data: bytes) -> None:
    text = escape_untrusted(data)
    assert text.isprintable()
