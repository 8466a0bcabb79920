"""Tier (a): the datagram client core, no sockets, time driven by hand."""

from __future__ import annotations

import random

import pytest

from udpkit.apps import REPLY_RULES
from udpkit.core.errors import UsageError
from udpkit.core.exchange import Answered, DatagramClientCore, Event, Failed
from udpkit.core.matching import Predicate
from udpkit.core.retry import RetryPolicy

SERVER = ("127.0.0.1", 9999)
POLICY = RetryPolicy(timeout=15.0, retries=3, jitter=0)  # attempts at 0, 1, 3, 7 s
GREETING = REPLY_RULES["greeting"]
ECHO = REPLY_RULES["echo"]


def make_core(**kwargs: object) -> DatagramClientCore:
    options: dict[str, object] = {"server": SERVER, "matcher": GREETING, "policy": POLICY,
                                  "rng": random.Random(0)}
    options.update(kwargs)
    return DatagramClientCore(**options)  # type: ignore[arg-type]


def events(core: DatagramClientCore) -> list[Event]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


def test_request_and_matching_reply() -> None:
    core = make_core()
    token = core.request(b"Michael", now=0.0)
    assert core.datagrams_to_send() == [b"Michael"]
    assert core.get_timer() == 1.0
    core.receive_datagram(b"Hello, Michael!", SERVER, now=0.25)
    assert events(core) == [Answered(token, b"Michael", b"Hello, Michael!", 0.25, 1)]
    assert core.get_timer() is None
    assert core.stats().answered == 1


def test_retransmits_on_each_timeout_then_gives_up_at_the_deadline() -> None:
    core = make_core()
    token = core.request(b"Tracy", now=0.0)
    sent_at = [0.0]
    core.datagrams_to_send()
    while (timer := core.get_timer()) is not None:
        core.handle_timer(timer)
        if core.datagrams_to_send():
            sent_at.append(timer)
    assert sent_at == [0.0, 1.0, 3.0, 7.0]
    assert events(core) == [Failed(token, b"Tracy", "timeout", 15.0, 4)]
    stats = core.stats()
    assert (stats.transmissions, stats.retransmissions, stats.timeouts) == (4, 3, 1)


def test_reply_to_a_retransmission_completes_and_later_copies_are_duplicates() -> None:
    core = make_core()
    core.request(b"Sarah", now=0.0)
    core.handle_timer(1.0)
    assert core.datagrams_to_send() == [b"Sarah", b"Sarah"]
    core.receive_datagram(b"Hello, Sarah!", SERVER, now=1.1)
    core.receive_datagram(b"Hello, Sarah!", SERVER, now=1.2)
    [answered] = events(core)
    assert isinstance(answered, Answered)
    assert answered.attempts == 2
    assert core.stats().duplicates == 1


def test_stray_unexpected_and_late_datagrams_are_counted_not_accepted() -> None:
    core = make_core(policy=RetryPolicy(timeout=1.0, retries=0))
    core.request(b"A", now=0.0)
    core.receive_datagram(b"Hello, A!", ("127.0.0.2", 9999), now=0.1)  # wrong source
    core.receive_datagram(b"Hello, B!", SERVER, now=0.2)  # answers nothing
    assert events(core) == []
    core.handle_timer(1.0)
    [failed] = events(core)
    assert isinstance(failed, Failed)
    core.receive_datagram(b"Hello, A!", SERVER, now=1.5)  # after the give-up
    stats = core.stats()
    assert (stats.stray, stats.unexpected, stats.late, stats.answered) == (1, 1, 1, 0)


def test_concurrent_requests_are_matched_by_content_not_order() -> None:
    core = make_core()
    tokens = {name: core.request(name, now=0.0) for name in (b"a", b"b", b"c")}
    for name in (b"c", b"a", b"b"):
        core.receive_datagram(b"Hello, " + name + b"!", SERVER, now=0.5)
    got = {event.request: event.token for event in events(core)}
    assert got == tokens


def test_same_payload_twice_in_flight_completes_oldest_first() -> None:
    core = make_core()
    first = core.request(b"x", now=0.0)
    second = core.request(b"x", now=0.1)
    core.receive_datagram(b"Hello, x!", SERVER, now=0.2)
    core.receive_datagram(b"Hello, x!", SERVER, now=0.3)
    assert [e.token for e in events(core)] == [first, second]


def test_refused_fails_every_request_at_once() -> None:
    core = make_core()
    a = core.request(b"a", now=0.0)
    b = core.request(b"b", now=0.0)
    core.connection_refused(now=0.01)
    assert {(e.token, e.cause) for e in events(core) if isinstance(e, Failed)} == {
        (a, "refused"),
        (b, "refused"),
    }
    assert core.in_flight() == 0


def test_cancel_forgets_without_an_event() -> None:
    core = make_core()
    token = core.request(b"a", now=0.0)
    core.cancel(token)
    assert core.get_timer() is None
    core.handle_timer(100.0)
    assert events(core) == []


def test_predicate_matcher_scans_requests() -> None:
    core = make_core(matcher=Predicate(lambda req, rep: rep.startswith(req + b":")))
    token = core.request(b"id7", now=0.0)
    core.receive_datagram(b"id8:no", SERVER, now=0.1)
    core.receive_datagram(b"id7:yes", SERVER, now=0.2)
    assert [e.token for e in events(core)] == [token]
    assert core.stats().unexpected == 1


def test_echo_matcher() -> None:
    core = make_core(matcher=ECHO)
    token = core.request(b"ping", now=0.0)
    core.receive_datagram(b"ping", SERVER, now=0.1)
    assert [e.token for e in events(core)] == [token]


def test_oversized_payload_is_a_usage_error() -> None:
    core = make_core(max_payload=10)
    with pytest.raises(UsageError):
        core.request(b"x" * 11, now=0.0)
