"""Tier (a): the PROXY protocol parser on bytes alone; hypothesis for any bytes and any split."""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.core.errors import BadInput
from udpkit.core.proxy_protocol import (
    NEEDS_MORE,
    V2_SIGNATURE,
    ParseResult,
    ProxyHeader,
    ProxyProtocolPolicy,
    parse_untrusted,
)
from udpkit.core.sources import parse_networks


def v1(family: str, source: str, destination: str, sport: int, dport: int) -> bytes:
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()


def v2(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    *,
    command: int = 0x1,
    tlvs: bytes = b"",
    family: int | None = None,
) -> bytes:
    """A v2 header (section 2.2); ``source=None`` makes AF_UNSPEC."""
    if source is None or destination is None:
        body = b""
        family_protocol = 0x00 if family is None else family
    else:
        src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
        family_protocol = (0x11 if src.version == 4 else 0x21) if family is None else family
    body += tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family_protocol]) + struct.pack(
        "!H", len(body)
    ) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def outcome(data: bytes) -> ParseResult | str:
    try:
        return parse_untrusted(data)
    except BadInput:
        return "bad"


# -- version 1 ------------------------------------------------------------------


def test_v1_tcp4_gives_the_client_and_what_follows_is_not_taken() -> None:
    header = v1("TCP4", "192.0.2.1", "198.51.100.1", 56324, 443)
    result = parse_untrusted(header + b"Michael\n")
    assert result == (
        ProxyHeader(1, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.1", 443)),
        len(header),
    )


def test_v1_tcp6() -> None:
    header = v1("TCP6", "2001:db8::1", "2001:db8::2", 1, 65535)
    assert parse_untrusted(header) == (
        ProxyHeader(1, "PROXY", "TCP6", ("2001:db8::1", 1), ("2001:db8::2", 65535)),
        len(header),
    )


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ff::1 ff::2 1 2\r\n"])
def test_v1_unknown_keeps_the_real_peer(line: bytes) -> None:
    assert parse_untrusted(line) == (ProxyHeader(1, "PROXY", "UNKNOWN"), len(line))


def test_v1_partial_needs_more() -> None:
    header = v1("TCP4", "192.0.2.1", "198.51.100.1", 56324, 443)
    for cut in range(len(header)):
        assert parse_untrusted(header[:cut]) is NEEDS_MORE


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"Michael\n",
        b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",  # LF alone
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 70000\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n",
        b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n",  # leading zero
        b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",  # family mismatch
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",  # two spaces
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY " + b"A" * 120,  # no CRLF within 107 bytes
        b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
    ],
)
def test_malformed_headers_raise_bad_input(data: bytes) -> None:
    with pytest.raises(BadInput):
        parse_untrusted(data)


def test_v1_line_of_exactly_107_bytes_is_accepted_108_is_not() -> None:
    base = b"PROXY UNKNOWN "
    longest = base + b"x" * (107 - len(base) - 2) + b"\r\n"
    assert len(longest) == 107
    assert parse_untrusted(longest) == (ProxyHeader(1, "PROXY", "UNKNOWN"), 107)
    with pytest.raises(BadInput):
        parse_untrusted(base + b"x" * (108 - len(base) - 2) + b"\r\n")


# -- version 2 ------------------------------------------------------------------


def test_v2_ipv4_with_tlvs_skipped() -> None:
    header = v2(("192.0.2.1", 40000), ("198.51.100.1", 9999),
                tlvs=tlv(0x04, b"") + tlv(0xEA, b"vpce-0123"))
    result = parse_untrusted(header + b"rest")
    assert result == (
        ProxyHeader(2, "PROXY", "TCP4", ("192.0.2.1", 40000), ("198.51.100.1", 9999)),
        len(header),
    )


def test_v2_ipv6() -> None:
    header = v2(("2001:db8::7", 1234), ("2001:db8::1", 9999))
    assert parse_untrusted(header) == (
        ProxyHeader(2, "PROXY", "TCP6", ("2001:db8::7", 1234), ("2001:db8::1", 9999)),
        len(header),
    )


def test_v2_local_and_unspec_keep_the_real_peer() -> None:
    local = v2(("192.0.2.1", 1), ("192.0.2.2", 2), command=0x0)
    assert parse_untrusted(local) == (ProxyHeader(2, "LOCAL", "UNKNOWN"), len(local))
    unspec = v2(None, None)
    assert parse_untrusted(unspec) == (ProxyHeader(2, "PROXY", "UNKNOWN"), 16)
    unix = V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216)
    assert parse_untrusted(unix) == (ProxyHeader(2, "PROXY", "UNKNOWN"), len(unix))


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE[:11] + b"X",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # family 4
        V2_SIGNATURE + b"\x21\x13\x00\x0c" + bytes(12),  # protocol 3
        V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),  # too short for IPv4
        V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(14),  # a TLV cut short
        V2_SIGNATURE + b"\x21\x11\x00\x0f" + bytes(12) + b"\x01\x00\x09",  # TLV too long
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # longer than the limit
    ],
)
def test_malformed_v2_raises_bad_input(data: bytes) -> None:
    with pytest.raises(BadInput):
        parse_untrusted(data)


def test_v2_limit_is_a_parameter() -> None:
    big = v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs=tlv(0xE0, bytes(5000)))
    with pytest.raises(BadInput, match="longer than"):
        parse_untrusted(big)
    assert parse_untrusted(big, limit=6000) != NEEDS_MORE


def test_empty_buffer_needs_more() -> None:
    assert parse_untrusted(b"") is NEEDS_MORE


def test_policy_trusts_only_its_networks() -> None:
    everyone = ProxyProtocolPolicy()
    assert everyone.expects_header("198.51.100.9")
    balancers = ProxyProtocolPolicy(parse_networks(["10.0.0.0/8", "::1"]))
    assert balancers.expects_header("10.1.2.3")
    assert balancers.expects_header("::ffff:10.1.2.3")
    assert balancers.expects_header("::1")
    assert not balancers.expects_header("127.0.0.1")
    assert not balancers.expects_header("not-an-address")


# -- properties -------------------------------------------------------------------

addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    version: Literal[1, 2] = 1 if draw(st.booleans()) else 2
    six = draw(st.booleans())
    addresses = addresses6 if six else addresses4
    source = (draw(addresses), draw(ports))
    destination = (draw(addresses), draw(ports))
    family: Literal["TCP4", "TCP6"] = "TCP6" if six else "TCP4"
    expected = ProxyHeader(version, "PROXY", family, source, destination)
    if version == 1:
        return v1(family, source[0], destination[0], source[1], destination[1]), expected
    tlvs = b"".join(
        tlv(kind, value)
        for kind, value in draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)),
                                         max_size=4))
    )
    return v2(source, destination, tlvs=tlvs), expected


# Random bytes seldom get past the first byte: start some with a header's beginning.
prefixes = st.sampled_from(
    [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY UNKNOWN", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"]
)
untrusted = st.builds(lambda prefix, tail: prefix + tail, prefixes, st.binary(max_size=200))


@given(untrusted)
def test_any_bytes_parse_need_more_or_raise_bad_input(data: bytes) -> None:
    result = outcome(data)
    if isinstance(result, tuple):
        _, consumed = result
        assert 0 < consumed <= len(data)


@given(untrusted, st.integers(0, 250))
def test_a_decision_on_a_prefix_stands_for_every_longer_buffer(data: bytes, cut: int) -> None:
    """More bytes never change a decision already made (the parser is fed a growing buffer)."""
    early = outcome(data[:cut])
    if early is not NEEDS_MORE:
        assert outcome(data) == early


@given(valid_headers(), st.binary(max_size=50), st.data())
@settings(max_examples=300)
def test_any_split_of_a_valid_header_gives_the_same_header(
    case: tuple[bytes, ProxyHeader], trailing: bytes, data: st.DataObject
) -> None:
    header_bytes, expected = case
    stream = header_bytes + trailing
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buffer = b""
    result: ParseResult | str = NEEDS_MORE
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[start:end]
        result = outcome(buffer)
        if result is not NEEDS_MORE:
            break
    assert result == (expected, len(header_bytes))


@given(valid_headers(), st.integers(0, 200), st.integers(0, 255))
def test_a_flipped_byte_parses_or_raises_bad_input(
    case: tuple[bytes, ProxyHeader], position: int, value: int
) -> None:
    header_bytes, _ = case
    data = bytearray(header_bytes)
    data[position % len(data)] = value
    result = outcome(bytes(data))  # never anything but a result, NEEDS_MORE or BadInput
    if result is not NEEDS_MORE and result != "bad":
        assert isinstance(result, tuple)
        header, consumed = result
        assert isinstance(header, ProxyHeader)
        assert 0 < consumed <= len(data)
