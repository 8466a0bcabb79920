"""Tier (a): the built-in apps, their registry, and the app loader."""

from __future__ import annotations

import pathlib

import pytest

from udpkit.apps import (
    BUILTIN,
    BUILTIN_APPS,
    DEFAULT_APP,
    REPLY_RULES,
    App,
    echo,
    greet,
    greeting,
    load_app,
    reply_rule,
    rule_names,
)
from udpkit.core.errors import AppLoadError, UsageError
from udpkit.core.handler import Peer
from udpkit.core.matching import ANY, ExpectReply, NumberedReply, Predicate, ReplyRule

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


def test_echo_is_its_own_reply_rule() -> None:
    """One identity function: the echo handler is also the reply a client expects."""
    rule = BUILTIN_APPS["echo"].reply
    assert isinstance(rule, ExpectReply)
    assert rule.reply_for is echo
    assert rule.expected(b"abc\n") == b"abc\n"
    assert echo(b"abc", PEER) == b"abc"


def test_the_registry_names_every_builtin_app_once() -> None:
    assert list(BUILTIN_APPS) == list(BUILTIN) == ["greeting", "echo", "dns"]
    assert DEFAULT_APP == "greeting"
    for name, app in BUILTIN_APPS.items():
        assert isinstance(app, App)
        assert app.name == name
        assert REPLY_RULES[name] is app.reply
    assert REPLY_RULES["any"] is ANY
    assert rule_names() == ["greeting", "echo", "dns", "any"]
    assert rule_names(numbering=True) == ["greeting", "echo", "dns"]


@pytest.mark.parametrize("name", [name for name in BUILTIN if BUILTIN_APPS[name].handler])
@pytest.mark.parametrize("request_bytes", [b"Michael", b"n42\n", b"a\r\n", b"\xff", b"x" * 300])
def test_each_apps_reply_rule_accepts_its_handlers_reply(name: str, request_bytes: bytes) -> None:
    """The two halves of an app agree: what the handler answers, the rule accepts."""
    app = BUILTIN_APPS[name]
    assert app.handler is not None
    reply = app.handler(request_bytes, PEER)
    assert isinstance(reply, bytes)
    assert app.reply.matches(request_bytes, reply)
    assert not app.reply.matches(request_bytes, reply + b"?")


def test_reply_rule_by_name_pattern_rule_or_predicate() -> None:
    assert reply_rule("greeting") is BUILTIN_APPS["greeting"].reply
    assert reply_rule("any") is ANY
    numbered = reply_rule("^ok {seq}$")
    assert isinstance(numbered, NumberedReply)
    assert numbered.seq_of_untrusted(b"ok 17") == 17
    assert numbered.matches(b"req 17", b"ok 17")
    assert not numbered.matches(b"req 171", b"ok 17")
    custom = Predicate(lambda request, reply: reply == request[::-1])
    assert reply_rule(custom) is custom
    predicate = reply_rule(lambda request, reply: reply.startswith(request))
    assert isinstance(predicate, ReplyRule)
    assert predicate.matches(b"ab", b"abc")
    with pytest.raises(UsageError,
                       match="'greeting', 'echo', 'dns', 'any' or a regular expression"):
        reply_rule("smtp")


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
    with pytest.raises(AppLoadError, match=message) as caught:
        load_app(spec)
    assert isinstance(caught.value, UsageError)
    assert str(caught.value) == f"{caught.value.what} ({caught.value.hint})"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def handler(request, peer)\n    return request\n", "syntax error in .* line 1"),
        ("raise RuntimeError('no database')\n",
         "it raised RuntimeError: no database at .* line 1"),
        ("import sys\nsys.exit(3)\n", "it raised SystemExit: 3"),
        ("import no_such_dependency_xyz\n", "it imports 'no_such_dependency_xyz'"),
        ("raise ValueError('two\\nlines')\n", "ValueError: two lines"),
    ],
    ids=["syntax-error", "raises", "exits", "missing-dependency", "multi-line-message"],
)
def test_a_module_that_fails_at_import_is_one_app_load_error(
    source: str, message: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: only ImportError was caught, so a syntax error or an exception
    raised while importing the user's module escaped as a traceback."""
    module = f"broken_app_{abs(hash(source))}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppLoadError, match=message) as caught:
        load_app(f"{module}:handler")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"cannot import module {module!r}")


def test_peer_formats_ipv4_and_ipv6() -> None:
    assert str(PEER) == "127.0.0.1:5000"
    assert str(Peer(("::1", 53, 0, 0), "tcp")) == "[::1]:53"
    assert PEER.host == "127.0.0.1"
    assert PEER.port == 5000
