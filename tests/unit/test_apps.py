"""Tier (a): the built-in apps and the app loader."""

from __future__ import annotations

import pytest

from udpkit.apps import echo, greet, greeting, load_app
from udpkit.core.errors import UsageError
from udpkit.core.handler import Peer

PEER = Peer(("127.0.0.1", 5000), "udp")


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"Michael", b"Hello, Michael!"),
        (b"Michael\n", b"Hello, Michael!\n"),
        (b"Michael\r\n", b"Hello, Michael!\r\n"),
        (b"\xff\xfe", b"Hello, \xff\xfe!"),
        (b"a\nb", b"Hello, a\nb!"),
        (b"\n", b"Hello, !\n"),
        (b"100% %s %b", b"Hello, 100% %s %b!"),
    ],
)
def test_greeting_is_the_tutorials_byte_for_byte(request_bytes: bytes, reply: bytes) -> None:
    assert greet(request_bytes) == reply
    assert greeting(request_bytes, PEER) == reply


def test_echo_returns_the_request() -> None:
    assert echo(b"\x00abc\n", PEER) == b"\x00abc\n"


def test_load_app_builtin_and_import_string() -> None:
    assert load_app("greeting") is greeting
    assert load_app("echo") is echo
    assert load_app("udpkit.apps.greeting:greet") is greet  # type: ignore[comparison-overlap]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "not built in"),
        ("no_such_module_xyz:app", "cannot import module"),
        ("udpkit.apps.greeting:missing", "has no attribute"),
        ("udpkit.core.framing:EXIT", "not callable"),
    ],
)
def test_load_app_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_app(spec)


def test_peer_formats_ipv4_and_ipv6() -> None:
    assert str(PEER) == "127.0.0.1:5000"
    assert str(Peer(("::1", 53, 0, 0), "tcp")) == "[::1]:53"
    assert PEER.host == "127.0.0.1"
    assert PEER.port == 5000
