"""A zone file turned into answers, rendered once: what ``udpkit serve dns`` serves.

Rule: every answer comes from :meth:`ZoneAnswers.answer_for`, the one place
that knows the DNS answering rules (RFC 1034 §4.3.2: CNAME chased within the
zone, referrals below a zone cut with glue, wildcards, NXDOMAIN and NODATA
with the SOA in the authority section, its TTL capped by the SOA minimum as
RFC 2308 §3 says; outside the zone REFUSED).  It is run once per name and
each type the name has when the zone loads, and its answers kept by the
lowered question; a question the table does not hold is sorted out by
:meth:`ZoneAnswers.lookup`: REFUSED, NXDOMAIN and NODATA do not depend on the
name and are kept whole, the rest (referrals, wildcards) is answered by the
same function when asked.  Answers are rendered
with dnspython with a lower-case question; :mod:`udpkit.core.dns_wire`
patches in the id and the question as asked.  Compression pointers into the
question stay valid because the asked name has the same length.

The zone file is RFC 1035 §5 master-file format, parsed by dnspython
(imported here only, when a zone is loaded: ``import udpkit`` does not need it).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

from udpkit.core.dns_wire import AA, CLASS_IN, NOERROR, NXDOMAIN, QR, REFUSED, TYPES, Answer
from udpkit.core.errors import UsageError

if TYPE_CHECKING:
    import dns.name
    import dns.node
    import dns.rrset
    import dns.zone

CHASED_TYPES = tuple(TYPES[name] for name in ("A", "NS", "SOA", "MX", "TXT", "AAAA"))
"""Types rendered at load time at a CNAME's owner (A NS SOA MX TXT AAAA: each a chase),
besides the types each name has.  A type a name lacks is NODATA, which
:meth:`ZoneAnswers.lookup` answers without rendering."""
MAX_CHAIN = 8
"""CNAMEs followed within the zone, at most (a loop stops there)."""
BUCKET_NXDOMAIN, BUCKET_REFUSED, BUCKET_NODATA = 1, 2, 3
"""Response-rate-limit buckets shared by all answers of their kind (NSD's 'nxdomain'
and 'error' classes, and NODATA for types no name has)."""


def _dns() -> None:
    """Import dnspython, or say how to install it."""
    try:
        import dns.rdatatype  # noqa: F401
    except ImportError:
        raise UsageError("udpkit serve dns needs dnspython: pip install 'udpkit[dns]'") from None


def load_zone(path: str, *, origin: str | None = None) -> ZoneAnswers:
    """Parse the zone file at ``path`` and render its answers.

    Raises :class:`UsageError` (one line) for a file that cannot be read or parsed.
    """
    _dns()
    import dns.exception
    import dns.zone

    try:
        zone = dns.zone.from_file(path, origin=origin, relativize=False, check_origin=True)
    except dns.name.EmptyLabel:  # dnspython's error for an origin such as "a..b"
        raise UsageError(f"--origin {origin!r} is not a domain name") from None
    except OSError as exc:
        raise UsageError(f"--zone {path}: {exc.strerror or exc}") from None
    except dns.exception.DNSException as exc:
        hint = ("" if origin or "origin" not in str(exc).lower()
                else " (set $ORIGIN in it, or give --origin NAME)")
        text = " ".join(str(exc).split())
        if text.startswith(f"{path}:"):  # dnspython's "path:line: what"
            where, _, what = text[len(path) + 1:].partition(": ")
            text = f"line {where}: {what}" if where.isdigit() else text
        raise UsageError(f"--zone {path}{'' if text.startswith('line ') else ':'} "
                         f"{text}{hint}") from None
    return ZoneAnswers(zone)


class ZoneAnswers:
    """Every answer of one zone, by lowered question (name in wire form, type, class)."""

    def __init__(self, zone: dns.zone.Zone) -> None:
        import dns.name
        import dns.rdataclass
        import dns.rdatatype

        assert zone.origin is not None
        self.origin: dns.name.Name = zone.origin
        self.nodes: dict[dns.name.Name, dns.node.Node] = dict(zone.nodes.items())
        soa = zone.get_rdataset(self.origin, dns.rdatatype.SOA)
        if soa is None:
            raise UsageError(f"zone {self.origin} has no SOA record at its origin")
        self._negative_ttl = min(soa.ttl, soa[0].minimum)
        self.serial: int = soa[0].serial
        self.cuts = {name for name, node in self.nodes.items() if name != self.origin
                     and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS)}
        self.names: set[dns.name.Name] = set()
        """Every name that exists: owners and the empty non-terminals above them."""
        for name in self.nodes:
            while name != self.origin and name not in self.names:
                self.names.add(name)
                name = name.parent()
        self.names.add(self.origin)
        self._origin_wire = _wire(self.origin)
        self._names_wire = {_wire(name) for name in self.names}
        self._cuts_wire = {_wire(name) for name in self.cuts}
        self._cname_wire = {_wire(name) for name, node in self.nodes.items()
                            if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)}
        buffer = io.BytesIO()
        self._negative_soa().to_wire(buffer)  # uncompressed: fits after any question
        negative = buffer.getvalue()
        counts = b"\x00\x00\x00\x01\x00\x00"
        self._nxdomain: Answer = Answer(bytes((QR | AA, NXDOMAIN)), counts + negative,
                                        counts + negative, BUCKET_NXDOMAIN)
        self._nodata: Answer = Answer(bytes((QR | AA, NOERROR)), counts + negative,
                                      counts + negative, BUCKET_NODATA)
        self._refused: Answer = Answer(bytes((QR, REFUSED)), bytes(6), bytes(6), BUCKET_REFUSED)
        self.table: dict[bytes, Answer] = {}
        for name in self.names:
            node = self.nodes.get(name)
            types: set[int] = set()
            if node is not None:
                types.update(int(rdataset.rdtype) for rdataset in node.rdatasets)
                if dns.rdatatype.CNAME in types:
                    types.update(CHASED_TYPES)
                if types:
                    types.add(TYPES["ANY"])  # one RRset of the name (RFC 8482), not NODATA
            for rdtype in types:
                key = _key(name, rdtype)
                self.table[key] = self.answer_for(name, rdtype)

    # -- answering -----------------------------------------------------------------

    def lookup(self, key: bytes) -> Answer:
        """The answer to the lowered question ``key`` (IN class), from the table or made.

        A name the table does not hold is sorted out on its wire form: outside the
        zone (REFUSED), not in it and no wildcard above (NXDOMAIN), in it with a
        type rendered for no name (NODATA): answers that do not depend on the name,
        kept whole (a flood of random names costs a look-up, not a render).  Below
        a delegation, at a wildcard or a CNAME, :meth:`answer_for` renders it.
        """
        answer = self.table.get(key)
        if answer is not None:
            return answer
        name = key[:-4]
        starts = []
        at = 0
        while name[at]:
            starts.append(at)
            at += name[at] + 1
        inside = [start for start in starts if name[start:] in self._names_wire]
        if not inside or name[inside[-1]:] != self._origin_wire:
            return self._refused
        if any(name[start:] in self._cuts_wire for start in inside):
            return self._render_key(key)
        encloser = name[inside[0]:]
        if inside[0] == 0:
            return self._render_key(key) if name in self._cname_wire else self._nodata
        if b"\x01*" + encloser in self._names_wire:
            return self._render_key(key)
        return self._nxdomain

    def _render_key(self, key: bytes) -> Answer:
        import dns.name

        name = dns.name.from_wire(key, 0)[0]
        return self.answer_for(name, int.from_bytes(key[-4:-2], "big"))

    def answer_for(self, qname: dns.name.Name, qtype: int) -> Answer:
        """Decide and render the answer to ``qname``/``qtype`` (RFC 1034 §4.3.2)."""
        import dns.flags

        rcode, authoritative, answer, authority, additional, bucket = self._decide(qname, qtype)
        flags = dns.flags.QR | (dns.flags.AA if authoritative else 0)
        full = self._render(qname, qtype, flags, rcode, answer, authority, additional)
        short = full if not additional else self._render(
            qname, qtype, flags, rcode, answer, authority, [])
        at = 12 + len(_key(qname, qtype))
        return Answer(full[2:4], full[6:12] + full[at:], short[6:12] + short[at:], bucket)

    def _render(self, qname: dns.name.Name, qtype: int, flags: int, rcode: int,
                answer: list[dns.rrset.RRset], authority: list[dns.rrset.RRset],
                additional: list[dns.rrset.RRset]) -> bytes:
        import dns.message
        import dns.rcode
        import dns.rrset

        message = dns.message.Message(id=0)
        message.flags = flags
        message.set_rcode(dns.rcode.Rcode(rcode))
        message.question = [dns.rrset.RRset(qname, CLASS_IN, qtype)]  # type: ignore[arg-type]
        message.answer = answer
        message.authority = authority
        message.additional = additional
        wire: bytes = message.to_wire(max_size=65535)
        return wire

    def _decide(self, qname: dns.name.Name, qtype: int) -> tuple[
            int, bool, list[dns.rrset.RRset], list[dns.rrset.RRset], list[dns.rrset.RRset], int]:
        import dns.name
        import dns.rdatatype
        import dns.rrset

        origin = self.origin
        if not qname.is_subdomain(origin):
            return REFUSED, False, [], [], [], BUCKET_REFUSED
        answer: list[dns.rrset.RRset] = []
        seen: set[dns.name.Name] = set()
        name = qname
        for _ in range(MAX_CHAIN + 1):
            seen.add(name)
            cut = self._cut_above(name)
            if cut is not None:  # a referral: the delegation and its glue, not authoritative
                ns = self._rrset(cut, cut, dns.rdatatype.NS)
                assert ns is not None
                glue = self._addresses(ns, below=None)
                return NOERROR, bool(answer), answer, [ns], glue, hash(cut)
            owner = name
            if name not in self.names:
                wildcard = self._wildcard(name)
                if wildcard is None:
                    return NXDOMAIN, True, answer, [self._negative_soa()], [], BUCKET_NXDOMAIN
                owner = wildcard
            rrsets = self._rrsets_at(owner, name)
            cname = rrsets.get(dns.rdatatype.CNAME)
            if cname is not None and qtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
                answer.append(cname)
                target = cname[0].target
                if not target.is_subdomain(origin) or target in seen:
                    return NOERROR, True, answer, [], [], hash(qname)
                name = target
                continue
            if qtype == dns.rdatatype.ANY and rrsets:
                # RFC 8482 §4.1: one RRset of the name, the first in the zone file (NSD's
                # choice), not all of them: ANY is the amplifier's favourite question.
                answer.append(next(iter(rrsets.values())))
                return NOERROR, True, answer, [], [], hash(qname)
            found = rrsets.get(qtype)
            if found is None:
                return NOERROR, True, answer, [self._negative_soa()], [], hash(qname)
            answer.append(found)
            additional: list[dns.rrset.RRset] = []
            if qtype in (dns.rdatatype.MX, dns.rdatatype.NS, dns.rdatatype.SRV):
                additional = self._addresses(found, below=origin)
            return NOERROR, True, answer, [], additional, hash(qname)
        return NOERROR, True, answer, [], [], hash(qname)  # a chain too long: as far as it went

    def _cut_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The highest zone cut at or above ``name`` (below the origin), if any."""
        if not self.cuts:
            return None
        for size in range(len(self.origin) + 1, len(name) + 1):
            candidate = name.split(size)[1]
            if candidate in self.cuts:
                return candidate
        return None

    def _wildcard(self, name: dns.name.Name) -> dns.name.Name | None:
        """The wildcard that answers ``name`` (RFC 4592: ``*`` at its closest encloser)."""
        import dns.name

        encloser = name.parent()
        while encloser not in self.names:
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*", *encloser.labels))
        return wildcard if wildcard in self.nodes else None

    def _rrsets_at(self, owner: dns.name.Name, name: dns.name.Name) -> dict[int, dns.rrset.RRset]:
        import dns.rrset

        node = self.nodes.get(owner)
        if node is None:
            return {}
        return {int(rdataset.rdtype): dns.rrset.from_rdata_list(name, rdataset.ttl,
                                                                 list(rdataset))
                for rdataset in node.rdatasets}

    def _rrset(self, owner: dns.name.Name, name: dns.name.Name,
               rdtype: int) -> dns.rrset.RRset | None:
        return self._rrsets_at(owner, name).get(rdtype)

    def _addresses(self, rrset: dns.rrset.RRset,
                   below: dns.name.Name | None) -> list[dns.rrset.RRset]:
        """A and AAAA records of the names ``rrset`` points at, held in this zone."""
        import dns.rdatatype

        found: list[dns.rrset.RRset] = []
        for target in _targets(rrset):
            if not target.is_subdomain(self.origin):
                continue
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rrs = self._rrset(target, target, rdtype)
                if rrs is not None and rrs not in found:
                    found.append(rrs)
        return found

    def _negative_soa(self) -> dns.rrset.RRset:
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        soa = self.nodes[self.origin].get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)
        assert soa is not None
        return dns.rrset.from_rdata_list(self.origin, self._negative_ttl, list(soa))


def _targets(rrset: Iterable[object]) -> list[dns.name.Name]:
    names = []
    for rdata in rrset:
        for attr in ("exchange", "target"):
            value = getattr(rdata, attr, None)
            if value is not None:
                names.append(value)
    return names


def _wire(name: dns.name.Name) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None
    return wire


def _key(name: dns.name.Name, rdtype: int) -> bytes:
    return _wire(name) + rdtype.to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
