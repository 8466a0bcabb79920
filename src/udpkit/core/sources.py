"""Who a request comes from, in the terms limits and access lists use.

Rule: source keys group addresses by prefix (``/32`` for IPv4 and ``/64`` for
IPv6 by default) so that one host cannot escape a limit by hopping addresses
inside its own subnet.  Parsing is cached in a bounded table because it runs
per request.  Addresses arrive as text from the socket layer, already valid.

One canonical form for comparing: an IPv4 peer seen through a dual-stack socket
(``::ffff:a.b.c.d``, RFC 4291 §2.5.5.2) *is* the IPv4 peer, so both peers and the
configured networks are brought to IPv4 before they meet (``--deny ::ffff:10.0.0.5``
and ``--deny 10.0.0.5`` mean the same).  Two IPv6 ranges hold many unrelated hosts
under one /64 and are keyed otherwise: the NAT64 prefixes (RFC 6052 §2.1
``64:ff9b::/96``, RFC 8215 ``64:ff9b:1::/48``) carry each IPv4 client in their low 32
bits and are keyed as that IPv4 address (the access lists see both forms), and
link-local peers (``fe80::/10``, RFC 4291 §2.5.6), each a different neighbour sharing
``fe80::/64``, are keyed by their whole address.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

from udpkit.core.errors import UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
ANY: tuple[Network, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_ALL_IPV4 = ipaddress.IPv4Network("0.0.0.0/0")


def canonical_networks(network: Network) -> tuple[Network, ...]:
    """``network`` as peers are compared with it: an IPv4-mapped range as IPv4; an IPv6
    range that holds all of ``::ffff:0:0/96`` (``::/0``) also as all of IPv4."""
    if isinstance(network, ipaddress.IPv4Network):
        return (network,)
    if network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        first = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return (ipaddress.IPv4Network(f"{first}/{network.prefixlen - 96}"),)
    if _MAPPED.subnet_of(network):
        return (network, _ALL_IPV4)
    return (network,)


def canonical_host(host: str) -> str:
    """How a peer's host is shown: ``::ffff:10.0.0.5`` as ``10.0.0.5``."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR strings (``10.0.0.0/8``, ``::1``, or the words ``loopback`` and ``any``);
    raise :class:`UsageError`."""
    networks: list[Network] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if part == "loopback":
                networks.extend(LOOPBACK)
                continue
            if part == "any":
                networks.extend(ANY)
                continue
            try:
                networks.extend(canonical_networks(ipaddress.ip_network(part, strict=False)))
            except ValueError as exc:
                raise UsageError(f"bad network {part!r}: {exc}") from None
    return tuple(networks)


class SourceClassifier:
    """Maps a peer's host string to its rate-limit key and its access-list verdicts."""

    def __init__(
        self,
        *,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        allow: tuple[Network, ...] = (),
        deny: tuple[Network, ...] = (),
        exempt: tuple[Network, ...] = (),
        cache_size: int = 65536,
    ) -> None:
        if not 0 <= ipv4_prefix <= 32 or not 0 <= ipv6_prefix <= 128:
            raise UsageError("prefix lengths must be 0..32 (IPv4) and 0..128 (IPv6)")
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        self.allow = allow
        self.deny = deny
        self.exempt = exempt
        self._cache: OrderedDict[str, tuple[object, bool, bool]] = OrderedDict()
        self._cache_size = cache_size

    def classify(self, host: str) -> tuple[object, bool, bool]:
        """``(key, permitted, exempt)`` for ``host``.

        ``permitted`` is false when the host is denied, or when an allow list
        exists and the host is not on it; ``exempt`` means no rate limit.
        """
        cache = self._cache
        entry = cache.get(host)
        if entry is not None:
            return entry
        entry = self._compute(host)
        cache[host] = entry
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return entry

    def _compute(self, host: str) -> tuple[object, bool, bool]:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host, not self.allow, False  # not an IP (cannot happen from a socket)
        forms: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (address,)
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # dual-stack sockets show IPv4 as ::ffff:a.b.c.d
                forms = (address,)
            elif any(address in prefix for prefix in _NAT64):
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                forms = (address, embedded)
        keyed = forms[-1]
        if keyed.version == 4:
            key: object = (4, int(keyed) >> (32 - self.ipv4_prefix) if self.ipv4_prefix else 0)
        elif keyed in _LINK_LOCAL:
            key = (6, int(keyed), host.partition("%")[2])  # each neighbour its own, per link
        else:
            key = (6, int(keyed) >> (128 - self.ipv6_prefix) if self.ipv6_prefix else 0)
        denied = any(form in network for network in self.deny for form in forms)
        allowed = not self.allow or any(
            form in network for network in self.allow for form in forms
        )
        exempt = any(form in network for network in self.exempt for form in forms)
        return key, allowed and not denied, exempt
