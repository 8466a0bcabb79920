"""The DNS responder without sockets: the wire parser, the answers of a zone, the
truncation and EDNS rules, response-rate limiting on a hand-driven clock, and the
clients' side (query numbering, reply matching)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from tests.dns_zone import write_zone
from udpkit.apps import load_app, request_source
from udpkit.apps.dns import DnsQueries, DnsReply, DnsResponder
from udpkit.apps.dns_zone import ZoneAnswers, load_zone
from udpkit.core.dns_rrl import ResponseRateLimit
from udpkit.core.dns_wire import (
    MAX_UDP_PAYLOAD,
    BadQuery,
    encode_query,
    parse_query_untrusted,
    query_key,
    question_from_line,
    reply_key_untrusted,
)
from udpkit.core.errors import UsageError
from udpkit.core.handler import Peer

UDP = Peer(("192.0.2.200", 5353), "udp")
TCP = Peer(("192.0.2.200", 5353), "tcp")


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> ZoneAnswers:
    return load_zone(str(write_zone(tmp_path_factory.mktemp("zone"))))


@pytest.fixture
def responder(zone: ZoneAnswers) -> DnsResponder:
    return DnsResponder(zone)


def ask(responder: DnsResponder, name: str, rdtype: str, *, peer: Peer = UDP,
        **query_options: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **query_options)  # type: ignore[arg-type]
    query.flags &= ~dns.flags.RD
    wire = responder(query.to_wire(), peer)
    assert wire is not None
    answer = dns.message.from_wire(wire)
    assert answer.id == query.id
    assert query.is_response(answer)
    return answer


def records(section: list[dns.rrset.RRset]) -> list[str]:
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


# -- answers ---------------------------------------------------------------------------


def test_an_address_at_the_apex_is_authoritative_with_nothing_else(
        responder: DnsResponder) -> None:
    answer = ask(responder, "example.com.", "A")
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.AA
    assert not answer.flags & dns.flags.TC
    assert records(answer.answer) == ["example.com. 3600 IN A 192.0.2.1"]
    assert answer.authority == []


@pytest.mark.parametrize(("rdtype", "expected"), [
    ("AAAA", ["example.com. 3600 IN AAAA 2001:db8::1"]),
    ("MX", ["example.com. 3600 IN MX 10 mail.example.com.",
            "example.com. 3600 IN MX 20 mx.example.net."]),
    ("TXT", ['example.com. 3600 IN TXT "v=spf1 -all"']),
    ("NS", ["example.com. 3600 IN NS ns1.example.com.",
            "example.com. 3600 IN NS ns2.example.com."]),
    ("SOA", ["example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2026120101 "
             "7200 3600 1209600 300"]),
])
def test_each_type_at_the_apex(responder: DnsResponder, rdtype: str, expected: list[str]) -> None:
    assert records(ask(responder, "example.com.", rdtype).answer) == expected


def test_mx_and_ns_answers_carry_the_addresses_of_their_targets_in_the_zone(
        responder: DnsResponder) -> None:
    assert records(ask(responder, "example.com.", "MX").additional) == [
        "mail.example.com. 3600 IN A 192.0.2.25"]
    assert records(ask(responder, "example.com.", "NS").additional) == [
        "ns1.example.com. 3600 IN A 192.0.2.53", "ns2.example.com. 3600 IN A 192.0.2.54",
        "ns2.example.com. 3600 IN AAAA 2001:db8::54"]


def test_a_cname_is_chased_within_the_zone(responder: DnsResponder) -> None:
    answer = ask(responder, "alias.example.com.", "A")
    assert records(answer.answer) == [
        "alias.example.com. 3600 IN CNAME www.example.com.",
        "web.example.com. 3600 IN A 192.0.2.80",
        "www.example.com. 3600 IN CNAME web.example.com."]
    assert records(ask(responder, "www.example.com.", "CNAME").answer) == [
        "www.example.com. 3600 IN CNAME web.example.com."]


def test_a_cname_out_of_the_zone_is_answered_alone(responder: DnsResponder) -> None:
    answer = ask(responder, "out.example.com.", "A")
    assert answer.rcode() == dns.rcode.NOERROR
    assert records(answer.answer) == ["out.example.com. 3600 IN CNAME www.example.org."]


def test_a_dangling_cname_is_nxdomain_for_its_target_rfc6604(responder: DnsResponder) -> None:
    answer = ask(responder, "dangling.example.com.", "A")
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert len(answer.answer) == 1
    assert [rrset.rdtype for rrset in answer.authority] == [dns.rdatatype.SOA]


def test_nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl(
        responder: DnsResponder) -> None:
    for name, rdtype, rcode in [("nope.example.com.", "A", dns.rcode.NXDOMAIN),
                                ("web.example.com.", "MX", dns.rcode.NOERROR),
                                ("b.c.example.com.", "A", dns.rcode.NOERROR)]:
        answer = ask(responder, name, rdtype)
        assert answer.rcode() == rcode
        assert answer.answer == []
        assert answer.flags & dns.flags.AA
        (soa,) = answer.authority
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.ttl == 300


def test_a_wildcard_answers_with_the_name_asked(responder: DnsResponder) -> None:
    assert records(ask(responder, "y.z.wild.example.com.", "TXT").answer) == [
        'y.z.wild.example.com. 3600 IN TXT "wildcard"']
    assert ask(responder, "x.wild.example.com.", "MX").authority[0].rdtype == dns.rdatatype.SOA


def test_below_a_delegation_the_answer_is_a_referral_with_glue(
        responder: DnsResponder) -> None:
    answer = ask(responder, "deep.sub.example.com.", "A")
    assert not answer.flags & dns.flags.AA
    assert answer.answer == []
    assert records(answer.authority) == ["sub.example.com. 3600 IN NS ns.sub.example.com."]
    assert records(answer.additional) == ["ns.sub.example.com. 3600 IN A 192.0.2.77"]


@pytest.mark.parametrize(("name", "rdclass", "rdtype"), [
    ("www.example.org.", "IN", "A"), ("example.com.", "CH", "TXT"), ("com.", "IN", "NS"),
    ("example.com.", "IN", "AXFR"),
])
def test_outside_the_zone_or_its_class_is_refused(
        responder: DnsResponder, name: str, rdclass: str, rdtype: str) -> None:
    answer = ask(responder, name, rdtype, rdclass=rdclass)
    assert answer.rcode() == dns.rcode.REFUSED
    assert not answer.flags & dns.flags.AA
    assert answer.answer == answer.authority == []


def test_the_question_comes_back_in_the_case_it_was_asked_0x20(
        responder: DnsResponder) -> None:
    query = dns.message.make_query("WwW.ExAmPlE.cOm.", "A", use_edns=0)
    reply = responder(query.to_wire(), UDP)
    assert reply is not None
    assert b"\x03WwW\x07ExAmPlE\x03cOm\x00" in reply
    assert records(dns.message.from_wire(reply).answer)[0].startswith("WwW.ExAmPlE.cOm.")


def test_rd_and_cd_are_copied_and_ra_is_never_set(responder: DnsResponder) -> None:
    query = dns.message.make_query("example.com.", "A")
    query.flags |= dns.flags.RD | dns.flags.CD
    reply = responder(query.to_wire(), UDP)
    assert reply is not None
    flags = dns.message.from_wire(reply).flags
    assert flags & dns.flags.RD
    assert flags & dns.flags.CD
    assert not flags & dns.flags.RA


# -- sizes: EDNS, truncation, TCP --------------------------------------------------------


def test_without_edns_a_large_answer_is_truncated_and_empty(responder: DnsResponder) -> None:
    answer = ask(responder, "big.example.com.", "TXT")
    assert answer.flags & dns.flags.TC
    assert answer.answer == []
    assert answer.edns < 0


def test_with_edns_the_clients_size_decides_and_the_opt_record_comes_back(
        responder: DnsResponder) -> None:
    small = ask(responder, "big.example.com.", "TXT", use_edns=0, payload=512)
    assert small.flags & dns.flags.TC
    assert small.edns == 0
    large = ask(responder, "big.example.com.", "TXT", use_edns=0, payload=4096)
    assert not large.flags & dns.flags.TC
    assert len(large.answer[0]) == 1
    assert large.payload == MAX_UDP_PAYLOAD


def test_over_tcp_the_whole_answer_goes_out(responder: DnsResponder) -> None:
    answer = ask(responder, "big.example.com.", "TXT", peer=TCP)
    assert not answer.flags & dns.flags.TC
    assert len(answer.answer) == 1


def test_additional_records_are_left_out_before_the_answer_is_truncated(
        tmp_path: Path) -> None:
    names = "\n".join(f"host{index:02d} IN A 192.0.2.{index}" for index in range(16))
    mx = "\n".join(f"@ IN MX {index} host{index:02d}.example.org." for index in range(16))
    (tmp_path / "z").write_text(
        "$ORIGIN example.org.\n$TTL 60\n@ IN SOA ns hostmaster 1 2 3 4 5\n@ IN NS ns\n"
        f"ns IN A 192.0.2.1\n{names}\n{mx}\n")
    responder = DnsResponder(load_zone(str(tmp_path / "z")))
    answer = ask(responder, "example.org.", "MX")
    assert not answer.flags & dns.flags.TC
    assert len(answer.answer[0]) == 16
    assert answer.additional == []
    assert ask(responder, "example.org.", "MX", peer=TCP).additional != []


# -- malformed queries ---------------------------------------------------------------


def test_the_edns_payload_size_is_clamped_between_512_and_our_maximum() -> None:
    for offered, expected in [(0, 512), (100, 512), (1232, 1232), (65535, MAX_UDP_PAYLOAD)]:
        wire = dns.message.make_query("example.com.", "A", use_edns=0, payload=offered).to_wire()
        assert parse_query_untrusted(wire).udp_limit == expected


def _query(**changes: int) -> bytes:
    wire = bytearray(dns.message.make_query("example.com.", "A").to_wire())
    for offset, value in changes.items():
        wire[int(offset[1:])] = value
    return bytes(wire)


@pytest.mark.parametrize(("wire", "reason", "rcode"), [
    (b"", "short", None),
    (b"\x12\x34\x01\x00\x00\x01", "short", None),
    (_query(b2=0x80), "response", None),
    (_query(b2=0x28), "notimp", dns.rcode.NOTIMP),  # opcode UPDATE
    (_query(b5=0), "formerr", dns.rcode.FORMERR),  # no question
    (_query(b5=2), "formerr", dns.rcode.FORMERR),
    (_query(b7=1), "formerr", dns.rcode.FORMERR),  # an answer record in a query
    (_query()[:-3], "formerr", dns.rcode.FORMERR),
    (_query() + b"junk", "formerr", dns.rcode.FORMERR),
    (_query(b12=0xC0), "formerr", dns.rcode.FORMERR),  # a compression pointer
    (_query(b11=1), "formerr", dns.rcode.FORMERR),  # an additional record that is absent
])
def test_malformed_queries_get_the_rcode_the_rfcs_say_or_nothing(
        wire: bytes, reason: str, rcode: int | None, responder: DnsResponder) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_query_untrusted(wire)
    assert caught.value.reason == reason
    reply = responder(wire, UDP)
    if rcode is None:
        assert reply is None
        assert caught.value.reply is None
        return
    assert reply is not None
    assert reply[:2] == wire[:2]
    assert reply[2] & 0x80
    assert reply[3] & 0x0F == rcode
    assert responder.counts[reason] == 1


def test_an_unknown_edns_version_is_badvers(responder: DnsResponder) -> None:
    wire = dns.message.make_query("example.com.", "A", use_edns=1).to_wire()
    reply = responder(wire, UDP)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.BADVERS


def test_a_query_of_type_opt_is_a_format_error(responder: DnsResponder) -> None:
    answer = ask(responder, "example.com.", "OPT")
    assert answer.rcode() == dns.rcode.FORMERR


# -- response-rate limiting --------------------------------------------------------------


def test_rrl_sends_the_rate_then_slips_every_second_and_drops_the_rest() -> None:
    rrl = ResponseRateLimit(rate=5, slip=2)
    verdicts = [rrl.decide("198.51.100.7", 9, 100.0) for _ in range(11)]
    assert verdicts == ["send"] * 5 + ["drop", "slip"] * 3
    assert rrl.decide("198.51.100.8", 9, 100.0) == "drop"  # the same /24
    assert rrl.decide("198.51.101.8", 9, 100.0) == "send"  # another /24
    assert rrl.decide("198.51.100.7", 10, 100.0) == "send"  # another answer
    assert rrl.decide("198.51.100.7", 9, 101.0) == "send"  # a second later


def test_a_slipped_answer_is_truncated_and_rrl_applies_to_udp_only(zone: ZoneAnswers) -> None:
    now = [50.0]
    responder = DnsResponder(zone, rrl=ResponseRateLimit(rate=1, slip=1), clock=lambda: now[0])
    assert ask(responder, "example.com.", "A").answer != []
    slipped = ask(responder, "example.com.", "A")
    assert slipped.flags & dns.flags.TC
    assert slipped.answer == []
    assert ask(responder, "example.com.", "A", peer=TCP).answer != []
    assert responder.counts["rrl_slip"] == 1


def test_options_are_checked_by_the_app_that_takes_them(tmp_path: Path) -> None:
    zone = str(write_zone(tmp_path))
    with pytest.raises(UsageError, match="--zone is an option of app 'dns', not of 'greeting'"):
        load_app("greeting", options={"zone": zone})
    with pytest.raises(UsageError, match="needs --zone FILE"):
        load_app("dns")
    with pytest.raises(UsageError, match="--rrl-rate must be"):
        load_app("dns", options={"zone": zone, "rrl-rate": "fast"})
    handler = load_app("dns", options={"zone": zone, "rrl-rate": "10"}, clock=lambda: 0.0)
    assert isinstance(handler, DnsResponder)
    assert handler.rrl is not None


@pytest.mark.parametrize(("text", "message"), [
    ("$ORIGIN example.com.\n$TTL 60\n@ IN A 192.0.2.1\n", "no SOA"),
    ("$ORIGIN example.com.\n$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n@ IN A 300.0.0.1\n",
     r"bad.zone line \d+: Text input is malformed"),
    ("$TTL 60\n@ IN SOA ns hm 1 2 3 4 5\n", "origin"),
])
def test_a_bad_zone_file_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.zone"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        load_zone(str(path))
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="No such file"):
        load_zone(str(tmp_path / "missing.zone"))


# -- the clients' side ----------------------------------------------------------------


def test_queries_are_numbered_by_id_and_cycle_through_the_lines() -> None:
    queries = DnsQueries(["# a comment", "www.example.com A", "", "example.com mx"])
    first, second, third = queries.render_range(65535, 3)
    assert first[:2] == b"\xff\xff"
    assert second[:2] == b"\x00\x00"
    assert dns.message.from_wire(first).question[0].to_text() == "example.com. IN MX"
    assert dns.message.from_wire(second).question[0].to_text() == "www.example.com. IN A"
    assert dns.message.from_wire(third).edns == 0
    numbered = DnsQueries(["n{seq}.example.com AAAA"])
    assert dns.message.from_wire(numbered.render(42)).question[0].name.to_text() == (
        "n42.example.com.")


@pytest.mark.parametrize("line", ["", "a b c", "www.example.com BOGUS", "a..b A",
                                  "x" * 64 + ".com A", "caf\u00e9.com A", "a\\.b A"])
def test_a_bad_query_line_is_a_usage_error(line: str) -> None:
    with pytest.raises(UsageError):
        question_from_line(line)


def test_a_dns_reply_matches_its_query_by_id_and_question_as_asked(
        responder: DnsResponder) -> None:
    rule = DnsReply()
    query = encode_query(7, question_from_line("WWW.example.com A"))
    reply = responder(query, UDP)
    assert reply is not None
    assert rule.matches(query, reply)
    assert reply_key_untrusted(reply) == query_key(query)
    assert not rule.matches(encode_query(8, question_from_line("WWW.example.com A")), reply)
    assert not rule.matches(encode_query(7, question_from_line("www.example.com A")), reply)
    assert reply_key_untrusted(query) is None  # a query is not a reply


def test_a_late_dns_reply_is_traced_to_its_query_across_id_wraps(
        responder: DnsResponder) -> None:
    queries = DnsQueries(["example.com A", "example.com MX", "example.com TXT"])
    reply = responder(queries.render(65536 + 5), UDP)
    assert reply is not None
    assert DnsReply().find_seq_untrusted(reply, queries, 70000) == 65536 + 5
    assert DnsReply().find_seq_untrusted(reply, queries, 65536 + 5) is None
    assert DnsReply().find_seq_untrusted(b"junk", queries, 70000) is None


def test_request_source_uses_the_apps_format_or_the_template() -> None:
    assert isinstance(request_source("dns", ". NS"), DnsQueries)
    assert request_source("greeting", "n{seq}").render(3) == b"n3"
    with pytest.raises(UsageError, match="--query-file needs"):
        request_source("greeting", "n{seq}", lines=["x"])
    with pytest.raises(UsageError, match="--size does not apply"):
        request_source("dns", ". NS", size=100)


_LABELS = ["x", "www", "wild", "sub", "ns", "b", "c", "a", "dangling", "big", "web"]
_TAILS = ["example.com.", "example.org.", "com.", "."]


@pytest.mark.parametrize("tail", _TAILS)
@pytest.mark.parametrize("rdtype", ["A", "MX", "CAA", "TYPE999"])
def test_a_question_the_table_lacks_gets_what_the_full_rules_give(
        zone: ZoneAnswers, responder: DnsResponder, tail: str, rdtype: str) -> None:
    """Names missing from the table skip dnspython when their answer does not depend on
    the name (REFUSED, NXDOMAIN, NODATA): that shortcut answers as the full rules do."""
    import itertools

    names = [tail] + [".".join(labels) + "." + tail.rstrip(".") + "."
                      for size in (1, 2) for labels in itertools.product(_LABELS, repeat=size)]
    for name in names:
        query = dns.message.make_query(name.replace("..", "."), rdtype)
        wire = query.to_wire()
        parsed = parse_query_untrusted(wire)
        question = query.question[0]
        quick = dns.message.from_wire(_render(parsed, zone.lookup(parsed.key)))
        full = dns.message.from_wire(_render(parsed, zone.answer_for(
            question.name.canonicalize(), question.rdtype)))
        assert (quick.rcode(), quick.flags, quick.answer, quick.authority) == (
            full.rcode(), full.flags, full.answer, full.authority), name


def _render(query: object, answer: object) -> bytes:
    from udpkit.core.dns_wire import Answer, Query, render

    assert isinstance(query, Query)
    assert isinstance(answer, Answer)
    return render(query, answer, 65535)


def test_queries_of_a_file_are_padded_to_one_length_and_still_answered(
        responder: DnsResponder) -> None:
    """Equal sizes let the load generator batch its sends (UDP GSO); the padding is an
    EDNS option (RFC 7830) that a server skips."""
    queries = DnsQueries(["a.example.com A", "a-much-longer-name.example.com MX"])
    wires = queries.render_range(0, 4)
    assert len({len(wire) for wire in wires}) == 1
    for wire in wires:
        options = dns.message.from_wire(wire).options
        assert options
        assert options[0].otype == dns.edns.OptionType.PADDING
        reply = responder(wire, UDP)
        assert reply is not None
        assert DnsReply().matches(wire, reply)


def test_dns_clients_and_server_default_to_len16_over_tcp() -> None:
    from udpkit.apps import BUILTIN_APPS, default_tcp_framing

    assert BUILTIN_APPS["dns"].server_defaults["tcp_framing"] == "len16"
    assert default_tcp_framing("dns") == "len16"
    assert default_tcp_framing("greeting") == "line"
    assert default_tcp_framing("^ok {seq}$") == "line"


def test_a_repeated_query_is_answered_from_memory_as_it_would_be_anew(
        zone: ZoneAnswers) -> None:
    from tests.dns_zone import QUESTIONS
    from udpkit.apps import dns as dns_app

    remembering = DnsResponder(zone)
    for name, rdtype in QUESTIONS:
        for options in ({}, {"use_edns": 0, "payload": 512}, {"use_edns": 0, "want_dnssec": True}):
            query = dns.message.make_query(name, rdtype, **options)  # type: ignore[arg-type]
            first = remembering(query.to_wire(), UDP)
            query.id ^= 0x5A5A
            again = remembering(query.to_wire(), UDP)
            fresh = DnsResponder(zone)(query.to_wire(), UDP)
            assert first is not None
            assert again == fresh
            assert again is not None
            assert again[2:] == first[2:]
            assert again[:2] == query.to_wire()[:2]
    assert 0 < len(remembering._served[1]) <= dns_app.RECENT_QUERIES


def test_the_memory_of_answers_is_bounded(zone: ZoneAnswers,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from udpkit.apps import dns as dns_app

    monkeypatch.setattr(dns_app, "RECENT_QUERIES", 8)
    responder = DnsResponder(zone)
    for index in range(50):
        assert responder(encode_query(index, question_from_line(f"n{index}.example.com A")),
                         UDP) is not None
        assert len(responder._served[1]) <= 8


def test_the_clients_pending_table_finds_dns_replies_by_id_and_question(
        responder: DnsResponder) -> None:
    from udpkit.core.matching import PendingTable

    table: PendingTable[str] = PendingTable(DnsReply())
    first = encode_query(1, question_from_line("www.example.com A"))
    second = encode_query(2, question_from_line("example.com MX"))
    table.add("first", first)
    table.add("second", second)
    reply_second, reply_first = responder(second, UDP), responder(first, UDP)
    assert reply_first is not None
    assert reply_second is not None
    assert table.match(reply_second) == "second"
    assert table.classify_unmatched(reply_second) == "duplicate"
    table.abandon("first")
    assert table.match(reply_first) is None
    assert table.classify_unmatched(reply_first) == "late"
    assert table.classify_unmatched(b"junk") == "unexpected"


def test_a_library_server_config_takes_the_dns_apps_defaults_unless_given() -> None:
    """Issue 17: the app's server defaults were applied by ``udpkit serve`` only, so
    ``ServerConfig(app="dns")`` framed TCP by lines and capped amplification."""
    from udpkit.server import ServerConfig

    plain = ServerConfig(app="dns", app_options={"zone": "example.zone"})
    assert (plain.tcp_framing, plain.max_amplification) == ("len16", None)
    given = ServerConfig(app="dns", max_amplification=4.0)
    assert (given.tcp_framing, given.max_amplification) == ("len16", 4.0)
    other = ServerConfig(app="echo")
    assert (other.tcp_framing, other.max_amplification) == ("line", 10.0)
    assert dataclasses.replace(plain, port=0).tcp_framing == "len16"


@pytest.mark.parametrize("framing", ["line", "raw"])
def test_dns_over_tcp_in_another_framing_is_refused(framing: str) -> None:
    from udpkit.server import ServerConfig

    with pytest.raises(UsageError, match="app 'dns' over TCP needs --tcp-framing len16"):
        ServerConfig(app="dns", tcp_framing=framing)  # type: ignore[arg-type]
    assert ServerConfig(app="dns", tcp_framing=framing, tcp=False).udp  # type: ignore[arg-type]


def test_reload_serves_the_new_zone_and_keeps_the_old_one_when_the_file_is_broken(
        tmp_path: Path) -> None:
    """Issue 17: a zone could only change by a restart (SIGHUP stopped the server)."""
    from tests.dns_zone import ZONE_TEXT
    from udpkit.apps.dns import configure

    path = write_zone(tmp_path)
    responder = configure({"zone": str(path)}, None)
    query = dns.message.make_query("web.example.com.", "A").to_wire()

    def address() -> str:
        reply = responder(query, UDP)
        assert reply is not None
        return str(dns.message.from_wire(reply).answer[0][0])

    assert address() == "192.0.2.80"  # and remembered for the next identical query
    path.write_text(ZONE_TEXT.replace("2026120101", "2026120102")
                    .replace("192.0.2.80", "192.0.2.81"))
    assert responder.reload() == f"zone example.com. serial 2026120102 from {path}"
    assert address() == "192.0.2.81"
    path.write_text(ZONE_TEXT + "broken IN A not-an-address\n")
    with pytest.raises(UsageError, match=r"line \d+: .*; still serving serial 2026120102$"):
        responder.reload()
    path.unlink()
    with pytest.raises(UsageError, match="No such file or directory; still serving"):
        responder.reload()
    assert address() == "192.0.2.81"
    outcomes = responder.outcomes()
    assert (outcomes["zone_reloads"], outcomes["zone_reload_errors"]) == (1, 2)


def test_any_at_a_name_with_records_answers_one_of_them_not_nodata(zone: ZoneAnswers) -> None:
    """Found with ``dig example.com ANY``: the table held no ANY key, so a name that
    exists answered NODATA, as if it had no records.  RFC 8482: one RRset, the
    first of the file, as NSD answers (the peers tier compares)."""
    responder = DnsResponder(zone)
    for name, types in (("example.com.", {"SOA"}), ("www.example.com.", {"CNAME"}),
                        ("x.wild.example.com.", {"A"})):
        reply = responder(dns.message.make_query(name, "ANY").to_wire(), TCP)
        assert reply is not None
        message = dns.message.from_wire(reply)
        assert message.rcode() == dns.rcode.NOERROR
        assert {dns.rdatatype.to_text(rrset.rdtype) for rrset in message.answer} == types
        assert not message.authority


def test_a_zone_file_without_origin_is_served_with_origin_given(tmp_path: Path) -> None:
    """Found with a zone file as NSD and Knot take it (their configuration names the
    zone): without ``$ORIGIN`` it could not be served at all."""
    from tests.dns_zone import ZONE_TEXT
    from udpkit.apps.dns import configure

    path = tmp_path / "example.com.zone"
    path.write_text(ZONE_TEXT.replace("$ORIGIN example.com.\n", ""))
    with pytest.raises(UsageError, match=r"origin is unknown.* or give --origin NAME\)$"):
        configure({"zone": str(path)}, None)
    responder = configure({"zone": str(path), "origin": "example.com"}, None)
    reply = responder(dns.message.make_query("web.example.com.", "A").to_wire(), UDP)
    assert reply is not None
    assert str(dns.message.from_wire(reply).answer[0][0]) == "192.0.2.80"
    assert responder.reload().startswith("zone example.com. serial 2026120101")
    with pytest.raises(UsageError, match=r"--origin 'a\.\.b' is not a domain name"):
        configure({"zone": str(path), "origin": "a..b"}, None)
