"""The zone the DNS tests serve (udpkit, NSD and Knot alike), and its questions.

Every kind of answer has a name here: an apex with SOA, NS, MX, A, AAAA and TXT;
CNAME chains within the zone, out of it and dangling; an empty non-terminal; a
wildcard; a delegation with glue; and a TXT too large for 512 bytes.
"""

from __future__ import annotations

from pathlib import Path

ORIGIN = "example.com."

BIG_TXT = " ".join(f'"{letter * 240}"' for letter in "abcd")

ZONE_TEXT = f"""\
$ORIGIN {ORIGIN}
$TTL 3600
@        IN SOA ns1.example.com. hostmaster.example.com. 2026120101 7200 3600 1209600 300
@        IN NS  ns1.example.com.
@        IN NS  ns2.example.com.
@        IN MX  10 mail.example.com.
@        IN MX  20 mx.example.net.
@        IN A   192.0.2.1
@        IN AAAA 2001:db8::1
@        IN TXT "v=spf1 -all"
ns1      IN A   192.0.2.53
ns2      IN A   192.0.2.54
ns2      IN AAAA 2001:db8::54
mail     IN A   192.0.2.25
www      IN CNAME web.example.com.
web      IN A   192.0.2.80
web      IN AAAA 2001:db8::80
alias    IN CNAME www.example.com.
out      IN CNAME www.example.org.
dangling IN CNAME nothere.example.com.
a.b.c    IN A   192.0.2.99
*.wild   IN A   192.0.2.42
*.wild   IN TXT "wildcard"
sub      IN NS  ns.sub.example.com.
ns.sub   IN A   192.0.2.77
big      IN TXT {BIG_TXT}
"""

QUESTIONS = [
    ("example.com.", "SOA"), ("example.com.", "NS"), ("example.com.", "MX"),
    ("example.com.", "A"), ("example.com.", "AAAA"), ("example.com.", "TXT"),
    ("ns2.example.com.", "AAAA"), ("www.example.com.", "A"), ("www.example.com.", "AAAA"),
    ("www.example.com.", "CNAME"), ("alias.example.com.", "A"), ("out.example.com.", "A"),
    ("dangling.example.com.", "A"), ("web.example.com.", "MX"), ("nope.example.com.", "A"),
    ("b.c.example.com.", "A"), ("a.b.c.example.com.", "A"), ("x.wild.example.com.", "A"),
    ("y.z.wild.example.com.", "TXT"), ("x.wild.example.com.", "MX"),
    ("sub.example.com.", "NS"), ("deep.sub.example.com.", "A"), ("WwW.ExAmPlE.cOm.", "A"),
    ("www.example.org.", "A"), ("example.com.", "CAA"),
]
"""(name, type): every kind of answer the zone gives."""


def write_zone(directory: Path) -> Path:
    path = directory / "example.com.zone"
    path.write_text(ZONE_TEXT)
    return path
