"""Who a request comes from, in the terms limits and access lists use.

Rule: source keys group addresses by prefix (``/32`` for IPv4 and ``/64`` for
IPv6 by default) so that one host cannot escape a limit by hopping addresses
inside its own subnet.  Parsing is cached in a bounded table because it runs
per request.  Addresses arrive as text from the socket layer, already valid.
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


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR strings (``10.0.0.0/8``, ``::1``); raise :class:`UsageError`."""
    networks: list[Network] = []
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if part == "loopback":
                networks.extend(LOOPBACK)
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
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
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d
        if address.version == 4:
            key: object = int(address) >> (32 - self.ipv4_prefix) if self.ipv4_prefix else 0
            key = (4, key)
        else:
            key = (6, int(address) >> (128 - self.ipv6_prefix) if self.ipv6_prefix else 0)
        denied = any(address in network for network in self.deny)
        allowed = not self.allow or any(address in network for network in self.allow)
        exempt = any(address in network for network in self.exempt)
        return key, allowed and not denied, exempt
