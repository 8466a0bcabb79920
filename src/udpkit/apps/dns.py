"""The ``dns`` app: an authoritative DNS responder for one zone file.

``udpkit serve dns --zone example.zone`` answers queries for the zone over
UDP (and TCP with 2-byte length framing, RFC 1035 §4.2.2).  The clients'
side is here too: :class:`DnsReply` recognises the answer to a query by its
id and question (``--expect dns``), and :class:`DnsQueries` numbers the
queries of ``ping`` and ``bench`` (dnsperf's query-file lines ``name TYPE``).

Rule: the per-query work is only parsing the header and question
(:func:`udpkit.core.dns_wire.parse_query_untrusted`, which raises one error
type), one dictionary look-up of an answer rendered when the zone loaded
(:mod:`udpkit.apps.dns_zone`), and patching in the id, flags and question as
asked (:func:`udpkit.core.dns_wire.render`); building a dnspython message per
query cost 50-100 times more.  Over UDP, a query whose bytes after the id were
answered lately (flags, question as asked, EDNS size: everything the answer
depends on) is answered from :data:`RECENT_QUERIES` without a parse: the
id, then the same bytes as then.
Over UDP an answer is cut to the client's EDNS size, and response-rate
limiting (:mod:`udpkit.core.dns_rrl`), when on, decides whether it goes out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from udpkit.apps.app import App, AppOption, Clock
from udpkit.apps.dns_zone import ZoneAnswers, load_zone
from udpkit.core.dns_rrl import ResponseRateLimit
from udpkit.core.dns_wire import (
    BAD_QUERY_REASONS,
    CLASS_IN,
    REFUSED,
    TYPES,
    BadQuery,
    encode_query,
    error_answer,
    parse_query_untrusted,
    query_key,
    question_from_line,
    render,
    reply_key_untrusted,
)
from udpkit.core.errors import UsageError
from udpkit.core.handler import Peer
from udpkit.core.matching import ReplyRule
from udpkit.core.payloads import RequestSource

TCP_LIMIT = 65535
"""The largest message the 2-byte length of DNS over TCP can carry."""
ZONE_TRANSFERS = (TYPES["IXFR"], TYPES["AXFR"])
"""IXFR and AXFR: not served (no secondaries here), REFUSED as by a server whose
transfer access list is empty."""
RECENT_QUERIES = 16384
"""UDP queries whose answers are kept whole, by the query's bytes after its id: a
repeated query is answered with one look-up, without parsing it again."""
_MAX_TRIES = 4
OUTCOMES: tuple[str, ...] = (*BAD_QUERY_REASONS, "refused", "rrl_slip", "rrl_drop",
                              "zone_reloads", "zone_reload_errors")
"""What :meth:`DnsResponder.outcomes` counts, each from zero: a malformed query by its
reason, a REFUSED question, an answer response-rate limiting cut (``rrl_slip``: sent
truncated) or withheld (``rrl_drop``), and the zone reloads (SIGHUP) that took and
that failed (the zone served before is kept)."""


class DnsResponder:
    """``responder(request, peer)``: the answer to one query, or ``None``.

    ``counts`` tallies the outcomes udpkit's own counters cannot see: each
    malformed-query reason, REFUSED, what response-rate limiting did, and the
    zone's reloads.  ``path``: the zone's file, which :meth:`reload` reads again.
    """

    def __init__(self, zone: ZoneAnswers, *, rrl: ResponseRateLimit | None = None,
                 clock: Clock | None = None, path: str | None = None,
                 origin: str | None = None) -> None:
        if rrl is not None and clock is None:
            raise UsageError("response-rate limiting needs a clock")
        self.rrl = rrl
        self.clock = clock
        self.path = path
        self.origin = origin
        """The zone's name when its file sets no ``$ORIGIN`` (``--origin``)."""
        self.counts: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self._served: tuple[ZoneAnswers, dict[bytes, bytes]] = (zone, {})
        """The zone, and its UDP answers by their query after its id (which decides the
        answer wholly): one tuple, so a reload replaces both at once, even for a call
        running on a handler thread."""

    @property
    def zone(self) -> ZoneAnswers:
        """The zone served now."""
        return self._served[0]

    def reload(self) -> str:
        """Read the zone file again (the server does it on a thread) and serve it
        from the next query on; what was loaded, in one line.  A file that cannot be
        read or parsed leaves the zone served before in place: counted
        (``zone_reload_errors``) and raised as :class:`UsageError`, one line."""
        if self.path is None:
            raise UsageError("this responder was given a zone, not a file: nothing to reload")
        try:
            zone = load_zone(self.path, origin=self.origin)
            if zone.origin != self.zone.origin:
                raise UsageError(f"--zone {self.path}: its origin is now {zone.origin}, "
                                 f"not {self.zone.origin}")
        except Exception as exc:
            self.counts["zone_reload_errors"] += 1
            why = str(exc).rstrip(".")
            raise UsageError(f"{why}; still serving serial {self.zone.serial}") from None
        self._served = (zone, {})
        self.counts["zone_reloads"] += 1
        return f"zone {zone.origin} serial {zone.serial} from {self.path}"

    def outcomes(self) -> dict[str, int]:
        """``counts``, every name of :data:`OUTCOMES` included: the server's summary
        (``handler(short=0 ... formerr=2 ...)``) and ``/metrics``
        (``udpkit_handler_outcomes_total{outcome="formerr"}``) show them."""
        return dict(self.counts)

    def __call__(self, request: bytes, peer: Peer) -> bytes | None:
        udp = peer.transport == "udp"
        zone, recent = self._served
        if udp and self.rrl is None:
            tail = recent.get(request[2:])
            if tail is not None:
                return request[:2] + tail
        try:
            query = parse_query_untrusted(request)
        except BadQuery as bad:
            self.counts[bad.reason] += 1
            return bad.reply
        if query.qclass != CLASS_IN or query.qtype in ZONE_TRANSFERS:
            self.counts["refused"] += 1
            return error_answer(query, REFUSED)
        answer = zone.lookup(query.key)
        if udp:
            rrl = self.rrl
            if rrl is not None:
                assert self.clock is not None
                verdict = rrl.decide(peer.address[0], answer.bucket, self.clock())
                if verdict != "send":
                    self.counts[f"rrl_{verdict}"] += 1
                    return None if verdict == "drop" else render(query, answer, 0)
                return render(query, answer, query.udp_limit)
            reply = render(query, answer, query.udp_limit)
            if len(recent) >= RECENT_QUERIES:
                recent.clear()  # fixed memory; a flood of new queries only costs their parse
            recent[request[2:]] = reply[2:]
            return reply
        return render(query, answer, TCP_LIMIT)


def configure(options: Mapping[str, str], clock: Clock | None) -> DnsResponder:
    """The handler of ``serve dns``: ``zone`` (a file, required), ``origin`` (the
    zone's name, for a file without ``$ORIGIN``), ``rrl-rate`` (answers/s, or
    ``off``), ``rrl-slip``."""
    path = options.get("zone")
    if not path:
        raise UsageError("udpkit serve dns needs --zone FILE (a zone in RFC 1035 format)")
    rrl = None
    rate_text = options.get("rrl-rate", "off").strip().lower()
    if rate_text in ("off", "0", "none") and "rrl-slip" in options:
        raise UsageError("--rrl-slip needs --rrl-rate N (response-rate limiting is off)")
    if rate_text not in ("off", "0", "none"):
        try:
            rate = float(rate_text)
            slip = int(options.get("rrl-slip", "2"))
        except ValueError:
            raise UsageError("--rrl-rate must be a number or 'off', --rrl-slip a whole "
                             "number") from None
        rrl = ResponseRateLimit(rate=rate, slip=slip)
    origin = options.get("origin")
    return DnsResponder(load_zone(path, origin=origin), rrl=rrl, clock=clock, path=path,
                        origin=origin)


class DnsReply(ReplyRule):
    """A DNS answer answers the query with the same id and question, byte for byte
    (the question's case included: RFC 5452 §9.1's spoofing defence, 0x20's too)."""

    exact = True
    keyed = True
    name = "dns"

    def expected(self, request: bytes) -> bytes:
        return query_key(request)

    def reply_key_untrusted(self, reply: bytes) -> bytes | None:
        return reply_key_untrusted(reply)

    def find_seq_untrusted(self, reply: bytes, template: RequestSource, sent: int) -> int | None:
        """The latest query below ``sent`` with the reply's id (ids wrap at 65536)
        whose question it repeats."""
        key = reply_key_untrusted(reply)
        if key is None or sent < 1:
            return None
        seq = sent - 1 - ((sent - 1 - int.from_bytes(key[:2], "big")) % 65536)
        for _ in range(_MAX_TRIES):
            if seq < 0:
                return None
            if query_key(template.render(seq)) == key:
                return seq
            seq -= 65536
        return None

    def check(self, template: RequestSource) -> None:
        """Every query carries its number in its id: nothing to refuse."""


class DnsQueries:
    """Query ``seq`` has id ``seq % 65536`` and asks the question of line
    ``seq % len(lines)`` (``name [TYPE]``, dnsperf's format; ``{seq}`` in a line
    becomes the query's number), with EDNS(0) and RD clear, as dnsperf sends.

    Queries of different lengths are made equally long with an EDNS Padding
    option (RFC 7830, which servers skip): the load generator sends equal-sized
    datagrams many at a time (UDP GSO), and a mix of sizes would cut the batches.
    """

    def __init__(self, lines: Sequence[str]) -> None:
        kept = [line.strip() for line in lines
                if line.strip() and not line.lstrip().startswith(("#", ";"))]
        if not kept:
            raise UsageError("no DNS queries: give lines 'name TYPE'")
        self.template = kept[0] if len(kept) == 1 else f"{len(kept)} queries"
        self._lines = kept
        self._numbered = any("{seq}" in line for line in kept)
        for line in kept:
            question_from_line(line.replace("{seq}", "0"))
        self._tails: list[bytes] = []
        if not self._numbered:
            questions = [question_from_line(line) for line in kept]
            longest = max(map(len, questions))
            same = all(len(question) == longest for question in questions)
            self._tails = [encode_query(0, question, padding=None if same else (
                longest - len(question)))[2:] for question in questions]

    def render(self, seq: int) -> bytes:
        if self._numbered:
            line = self._lines[seq % len(self._lines)].replace("{seq}", str(seq))
            return encode_query(seq, question_from_line(line))
        return (seq & 0xFFFF).to_bytes(2, "big") + self._tails[seq % len(self._tails)]

    def render_range(self, start: int, count: int) -> list[bytes]:
        if self._numbered:
            return [self.render(seq) for seq in range(start, start + count)]
        tails = self._tails
        size = len(tails)
        return [(seq & 0xFFFF).to_bytes(2, "big") + tails[seq % size]
                for seq in range(start, start + count)]


APP = App(
    name="dns",
    handler=None,
    reply=DnsReply(),
    options=(
        AppOption(name="zone", metavar="FILE",
                  help="dns: the zone to serve, in RFC 1035 master-file format."),
        AppOption(name="origin", metavar="NAME",
                  help="dns: the zone's name, for a zone file that sets no $ORIGIN "
                       "[default: the file's $ORIGIN]."),
        AppOption(name="rrl-rate", metavar="N|off",
                  help="dns: response-rate limit, answers/s per source /24 (/56) and "
                       "answer, over UDP [default: off]."),
        AppOption(name="rrl-slip", metavar="N",
                  help="dns: every Nth answer over the rate limit goes out truncated (TC), "
                       "the rest are dropped; 0 drops all [default: 2]."),
    ),
    configure=configure,
    # Answers are larger than queries by design; RRL is DNS's amplification defence.
    # Over TCP each message is preceded by its length in two bytes (RFC 1035 §4.2.2).
    server_defaults=MappingProxyType({"max_amplification": None, "tcp_framing": "len16"}),
    tcp_framings=("len16",),
    requests=DnsQueries,
    default_payload=". NS",
)
