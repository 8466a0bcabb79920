"""DNS messages on the wire, as far as a responder and a load generator need them.

Rule: bytes from the network are parsed by :func:`parse_query_untrusted` and
:func:`reply_key_untrusted`, which raise :class:`BadQuery` and nothing else
(``reply_key_untrusted`` returns ``None`` instead); a query that cannot be
answered says how (``rcode`` to reply with, or ``None``: drop it).  Answers
themselves are built elsewhere (:mod:`udpkit.apps.dns_zone`, with dnspython,
once per zone); here they are only patched with the query's id, flags and
question as asked (0x20 mixed case, draft-vixie-dnsext-dns0x20), and sized
for the transport (RFC 6891 EDNS(0), RFC 1035 §4.2.1 512 bytes without it,
RFC 2181 §9 truncation).

Pure: no sockets, no clock, standard library only.

https://www.rfc-editor.org/rfc/rfc1035 https://www.rfc-editor.org/rfc/rfc6891
"""

from __future__ import annotations

from typing import NamedTuple

from udpkit.core.errors import BadInput, UsageError

HEADER = 12
"""Bytes of the fixed header (RFC 1035 §4.1.1)."""

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
"""Extended RCODE of an unsupported EDNS version (RFC 6891 §6.1.3)."""

CLASS_IN = 1
TYPE_OPT = 41

MAX_UDP_PAYLOAD = 1232
"""The largest UDP answer sent, whatever the client offers: the DNS Flag Day 2020
value, the default of NSD and Knot (it fits an IPv6 minimum MTU unfragmented)."""
MIN_UDP_PAYLOAD = 512
"""Without EDNS, and the floor of any advertised size (RFC 6891 §6.2.5)."""

TYPES: dict[str, int] = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
    "AAAA": 28, "SRV": 33, "NAPTR": 35, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48,
    "TLSA": 52, "SVCB": 64, "HTTPS": 65, "CAA": 257, "IXFR": 251, "AXFR": 252, "ANY": 255,
}
"""Record type mnemonics a query file may name (any other as ``TYPEnnn``, RFC 3597)."""

QR, AA = 0x80, 0x04
"""Flags of the third header byte: a response; an authoritative answer."""
_OPCODE, _TC, _RD = 0x78, 0x02, 0x01
_CD = 0x10
_DO = 0x80  # high byte of the OPT record's flags (RFC 3225)


BAD_QUERY_REASONS = ("short", "response", "notimp", "formerr", "badvers")
"""Every :attr:`BadQuery.reason`: a counter of the responder's each."""


class BadQuery(BadInput):
    """A datagram that is not a query this responder can answer normally.

    ``reply`` is the error answer to send (FORMERR, NOTIMP, BADVERS), or
    ``None`` when nothing may be sent (too short for a header, or a response:
    answering responses invites loops).  ``reason`` names the counter.
    """

    def __init__(self, reason: str, reply: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class Query(NamedTuple):
    """What a responder needs of one parsed query."""

    id_flags: bytes
    """The 4 header bytes the answer copies: id, and flags (RD, CD kept)."""
    question: bytes
    """The question section as asked (name in the client's case, type, class)."""
    key: bytes
    """The question with ASCII letters lowered: how answers are looked up."""
    qtype: int
    qclass: int
    udp_limit: int
    """Largest answer the client takes over UDP (512 without EDNS)."""
    opt: bytes
    """The OPT record to append to the answer (``b""`` without EDNS)."""


def opt_record(*, do: bool, extended_rcode: int = 0) -> bytes:
    """Our OPT pseudo-record: root owner, our UDP size, version 0, DO copied (RFC 3225)."""
    return (b"\x00\x00\x29" + MAX_UDP_PAYLOAD.to_bytes(2, "big")
            + bytes((extended_rcode, 0, _DO if do else 0, 0)) + b"\x00\x00")


_OPT_PLAIN = opt_record(do=False)
_OPT_DO = opt_record(do=True)


def _error(data: bytes, rcode: int, question: bytes = b"", opt: bytes = b"") -> bytes:
    """An answer carrying only ``rcode`` (and the question, and OPT, when known)."""
    flags = bytes(((data[2] & (_OPCODE | _RD)) | QR, (data[3] & _CD) | (rcode & 0x0F)))
    counts = (b"\x00\x01" if question else b"\x00\x00") + b"\x00\x00\x00\x00"
    counts += b"\x00\x01" if opt else b"\x00\x00"
    return data[:2] + flags + counts + question + opt


def parse_query_untrusted(data: bytes) -> Query:
    """Parse a query; raise :class:`BadQuery` (and only it) for anything else.

    RFC 1035 §4.1; one question (RFC 9619); no answer or authority records;
    in the additional section at most one OPT record (RFC 6891 §6.1.1), which
    gives the client's UDP size; trailing bytes are a format error.
    """
    size = len(data)
    if size < HEADER:
        raise BadQuery("short", None)
    flags = data[2]
    if flags & QR:
        raise BadQuery("response", None)
    if flags & _OPCODE:
        raise BadQuery("notimp", _error(data, NOTIMP))
    if data[4:10] != b"\x00\x01\x00\x00\x00\x00":
        raise BadQuery("formerr", _error(data, FORMERR))
    arcount = (data[10] << 8) | data[11]
    at = HEADER
    name_size = 0
    while True:
        if at >= size:
            raise BadQuery("formerr", _error(data, FORMERR))
        length = data[at]
        if length == 0:
            break
        if length > 63:  # a compression pointer or a reserved label type: not in a question
            raise BadQuery("formerr", _error(data, FORMERR))
        at += length + 1
        name_size += length + 1
    end = at + 5
    if end > size or name_size + 1 > 255:
        raise BadQuery("formerr", _error(data, FORMERR))
    question = data[HEADER:end]
    qtype = (data[end - 4] << 8) | data[end - 3]
    qclass = (data[end - 2] << 8) | data[end - 1]
    opt = b""
    udp_limit = MIN_UDP_PAYLOAD
    if arcount:
        if (arcount != 1 or end + 11 > size or data[end] != 0
                or data[end + 1:end + 3] != b"\x00\x29"):
            raise BadQuery("formerr", _error(data, FORMERR, question))
        rdlength = (data[end + 9] << 8) | data[end + 10]
        if end + 11 + rdlength != size:
            raise BadQuery("formerr", _error(data, FORMERR, question))
        do = bool(data[end + 7] & _DO)
        opt = _OPT_DO if do else _OPT_PLAIN
        if data[end + 6] != 0:  # EDNS version (RFC 6891 §6.1.3)
            raise BadQuery("badvers", _error(data, NOERROR, question,
                                             opt_record(do=do, extended_rcode=BADVERS >> 4)))
        offered = (data[end + 3] << 8) | data[end + 4]
        udp_limit = min(max(offered, MIN_UDP_PAYLOAD), MAX_UDP_PAYLOAD)
    elif end != size:
        raise BadQuery("formerr", _error(data, FORMERR, question))
    if qtype == TYPE_OPT:
        raise BadQuery("formerr", _error(data, FORMERR, question, opt))
    return Query(data[:4], question, question.lower(), qtype, qclass, udp_limit, opt)


def error_answer(query: Query, rcode: int) -> bytes:
    """An answer to a parsed query carrying only ``rcode``, the question and any OPT."""
    flags = bytes((QR | (query.id_flags[2] & _RD), (query.id_flags[3] & _CD) | rcode))
    counts = b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if query.opt else b"\x00\x00")
    return query.id_flags[:2] + flags + counts + query.question + query.opt


class Answer(NamedTuple):
    """An answer rendered once, without header id, question case or OPT.

    ``flags`` are the answer's two flag bytes before RD and CD are copied in;
    ``full`` and ``short`` are the six count bytes then the sections after the
    question: with and without the additional records (which may be left out
    rather than truncate, RFC 2181 §9).  ``bucket`` groups answers for
    response-rate limiting (the same for every NXDOMAIN of a zone, as in NSD).
    """

    flags: bytes
    full: bytes
    short: bytes
    bucket: int


def _with_opt(counts_and_sections: bytes, opt: bytes) -> bytes:
    if not opt:
        return counts_and_sections
    arcount = ((counts_and_sections[4] << 8) | counts_and_sections[5]) + 1
    return (counts_and_sections[:4] + arcount.to_bytes(2, "big") + counts_and_sections[6:]
            + opt)


def render(query: Query, answer: Answer, limit: int) -> bytes:
    """The answer to ``query``, at most ``limit`` bytes: the full answer, else without
    additional records, else empty with TC set (the client retries over TCP)."""
    id_flags = query.id_flags
    question = query.question
    opt = query.opt
    flags = bytes((answer.flags[0] | (id_flags[2] & _RD), answer.flags[1] | (id_flags[3] & _CD)))
    head = id_flags[:2] + flags
    room = limit - len(question) - len(opt) - 6
    body = answer.full
    if len(body) > room:
        body = answer.short
        if len(body) > room:
            flags = bytes((flags[0] | _TC, flags[1]))
            return (id_flags[:2] + flags + b"\x00\x01\x00\x00\x00\x00"
                    + (b"\x00\x01" if opt else b"\x00\x00") + question + opt)
    if opt:
        body = _with_opt(body, opt)
    return head + b"\x00\x01" + body[:6] + question + body[6:]


# -- the client's side: queries of a load test, and which reply answers which ----


def name_to_wire(name: str) -> bytes:
    """``www.example.com`` (a trailing dot optional) in wire form; ASCII labels only."""
    text = name.strip()
    if text in ("", "."):
        return b"\x00"
    if "\\" in text:
        raise UsageError(f"DNS name {name!r}: escapes are not supported")
    labels = text.rstrip(".").split(".")
    wire = bytearray()
    for label in labels:
        raw = label.encode("ascii", errors="strict") if label.isascii() else b""
        if not raw or len(raw) > 63:
            raise UsageError(f"DNS name {name!r}: labels must be 1 to 63 ASCII characters")
        wire += bytes((len(raw),)) + raw
    wire += b"\x00"
    if len(wire) > 255:
        raise UsageError(f"DNS name {name!r} is longer than 255 bytes")
    return bytes(wire)


def type_number(text: str) -> int:
    """``A``, ``aaaa``, ``TYPE65`` -> the record type's number."""
    word = text.strip().upper()
    if word in TYPES:
        return TYPES[word]
    if word.startswith("TYPE") and word[4:].isascii() and word[4:].isdigit():
        number = int(word[4:])
        if number < 65536:
            return number
    raise UsageError(f"unknown DNS record type {text!r} (a mnemonic such as A, or TYPEnnn)")


def question_from_line(line: str) -> bytes:
    """A question section from dnsperf's query-file line ``name [TYPE]`` (TYPE: A)."""
    words = line.split()
    if not 1 <= len(words) <= 2:
        raise UsageError(f"query line {line!r} must be 'name TYPE'")
    qtype = type_number(words[1]) if len(words) == 2 else 1
    return name_to_wire(words[0]) + qtype.to_bytes(2, "big") + b"\x00\x01"


EDNS_QUERY_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
"""The OPT record a load test's queries carry: EDNS(0), 1232 bytes (as dnsperf's -e)."""


def encode_query(query_id: int, question: bytes, *, edns: bool = True, rd: bool = False,
                 padding: int | None = None) -> bytes:
    """A query with id ``query_id`` (mod 65536) asking ``question``; ``padding``: add
    an EDNS Padding option (RFC 7830) of that many zero bytes."""
    header = ((query_id & 0xFFFF).to_bytes(2, "big") + (b"\x01" if rd else b"\x00") + b"\x00"
              + b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00"))
    if not edns:
        return header + question
    if padding is None:
        return header + question + EDNS_QUERY_OPT
    option = b"\x00\x0c" + padding.to_bytes(2, "big") + bytes(padding)
    return header + question + EDNS_QUERY_OPT[:-2] + len(option).to_bytes(2, "big") + option


def reply_key_untrusted(reply: bytes) -> bytes | None:
    """The id and question of a response (``None`` if it has no well-formed one):
    a response answers the query with the same id and question, byte for byte
    (the case as asked: a 0x20 client checks it)."""
    size = len(reply)
    if size < HEADER or not reply[2] & QR or reply[4:6] != b"\x00\x01":
        return None
    at = HEADER
    while at < size:
        length = reply[at]
        if length == 0:
            end = at + 5
            return reply[:2] + reply[HEADER:end] if end <= size else None
        if length > 63:
            return None
        at += length + 1
    return None


def query_key(query: bytes) -> bytes:
    """The key of the reply that answers ``query`` (as :func:`reply_key_untrusted`)."""
    at = HEADER
    while query[at]:
        at += query[at] + 1
    return query[:2] + query[HEADER:at + 5]
