"""Hostile bytes against the DNS responder: any datagram is answered, refused or
dropped, never a crash, and whatever goes out parses as a DNS response to it.

Two kinds of input: any bytes at all, and queries built field by field (flags,
counts, labels, types, an OPT record) then cut and flipped, which reach deeper.
"""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dns_zone import write_zone
from udpkit.apps.dns import DnsResponder
from udpkit.apps.dns_zone import load_zone
from udpkit.core.dns_rrl import ResponseRateLimit
from udpkit.core.dns_wire import BadQuery, parse_query_untrusted, reply_key_untrusted
from udpkit.core.handler import Peer

PEERS = [Peer(("192.0.2.1", 53), "udp"), Peer(("2001:db8::1", 53), "udp"),
         Peer(("192.0.2.1", 53), "tcp")]


def _responders(tmp: Path) -> tuple[DnsResponder, DnsResponder]:
    """One that remembers answers (no RRL), one that limits rates (and so never does)."""
    clock = iter(range(10**9))
    zone = load_zone(str(write_zone(tmp)))
    return DnsResponder(zone), DnsResponder(zone, rrl=ResponseRateLimit(rate=50, slip=2),
                                            clock=lambda: next(clock) / 1000)


labels = st.lists(st.sampled_from([b"www", b"example", b"com", b"WwW", b"ExAmPlE", b"cOm",
                                   b"wild", b"sub", b"*", b"x" * 63, b"", b"\xc0\x0c"]),
                  max_size=6)


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    header = draw(st.binary(min_size=4, max_size=4))
    counts = draw(st.sampled_from([b"\x00\x01\x00\x00\x00\x00\x00\x00",
                                   b"\x00\x01\x00\x00\x00\x00\x00\x01",
                                   draw(st.binary(min_size=8, max_size=8))]))
    name = b"".join(bytes((len(label),)) + label for label in draw(labels)) + b"\x00"
    qtype = draw(st.one_of(st.sampled_from([1, 2, 5, 6, 15, 16, 28, 41, 252, 255, 65535]),
                           st.integers(0, 65535)))
    qclass = draw(st.sampled_from([1, 3, 255]))
    opt = b""
    if counts[-1] == 1:
        opt = (b"\x00\x00\x29" + draw(st.binary(min_size=2, max_size=2))
               + bytes((0, draw(st.sampled_from([0, 1])), draw(st.integers(0, 255)), 0)))
        rdata = draw(st.binary(max_size=12))
        opt += len(rdata).to_bytes(2, "big") + rdata
    wire = header + counts + name + qtype.to_bytes(2, "big") + qclass.to_bytes(2, "big") + opt
    cut = draw(st.integers(0, len(wire)))
    wire = wire[:cut] if draw(st.booleans()) else wire
    flips = draw(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3))
    mutable = bytearray(wire)
    for at, value in flips:
        if at < len(mutable):
            mutable[at] = value
    return bytes(mutable)


def _check(responders: tuple[DnsResponder, DnsResponder], data: bytes, peer: Peer) -> None:
    remembering, responder = responders
    first = remembering(data, peer)
    assert remembering(data, peer) == first  # the second time from memory over UDP
    try:
        query = parse_query_untrusted(data)
    except BadQuery:
        query = None
    reply = responder(data, peer)
    if reply is None:
        return
    assert reply[:2] == data[:2]
    assert reply_key_untrusted(reply) is not None or query is None
    if peer.transport == "udp" and query is not None:
        assert len(reply) <= query.udp_limit
    try:
        message = dns.message.from_wire(reply)
    except dns.exception.DNSException as exc:  # only our header-only error replies may fail
        raise AssertionError(f"unparseable reply {reply!r} to {data!r}: {exc}") from None
    assert message.id == int.from_bytes(data[:2], "big")


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), peer=st.sampled_from(PEERS))
def test_any_bytes_are_answered_or_dropped(tmp_path: Path, data: bytes, peer: Peer) -> None:
    _check(_cached(tmp_path), data, peer)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=queries(), peer=st.sampled_from(PEERS))
def test_mangled_queries_are_answered_or_dropped(tmp_path: Path, data: bytes, peer: Peer) -> None:
    _check(_cached(tmp_path), data, peer)


@settings(max_examples=500)
@given(data=st.binary(max_size=300))
def test_reply_keys_of_any_bytes_never_raise(data: bytes) -> None:
    key = reply_key_untrusted(data)
    assert key is None or key[:2] == data[:2]


_RESPONDERS: dict[str, tuple[DnsResponder, DnsResponder]] = {}


def _cached(tmp_path: Path) -> tuple[DnsResponder, DnsResponder]:
    """The responders of the session (hypothesis reuses the function's tmp_path)."""
    responders = _RESPONDERS.get("zone")
    if responders is None:
        responders = _RESPONDERS["zone"] = _responders(tmp_path)
    return responders
