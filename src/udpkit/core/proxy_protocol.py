"""The PROXY protocol (v1 text and v2 binary): who the client behind a load balancer is.

Rule: sans-IO and untrusted.  :func:`parse_untrusted` looks at the bytes
received so far on a TCP connection and says either "need more bytes"
(:data:`NEEDS_MORE`) or ``(header, consumed)``; anything malformed raises
:class:`~udpkit.core.errors.BadInput` and nothing else.  The decision depends
only on the bytes given, so any split of the stream into segments gives the
same result once the header is complete.  A header never grows past
``limit`` bytes, so a peer cannot make the server hold more than that.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
(section 2.1: version 1; section 2.2: version 2; section 2.2.7: TLVs).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Literal, TypeAlias

from udpkit.core.errors import BadInput
from udpkit.core.sources import Network

V1_PREFIX = b"PROXY "
V1_MAX = 107
"""Section 2.1: the longest v1 line, ``\\r\\n`` included."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
"""Section 2.2: signature (12), version/command, family/protocol, length (2)."""
DEFAULT_LIMIT = 4096
"""Largest header accepted (v2 with TLVs); nginx and HAProxy send far less."""

Command: TypeAlias = Literal["PROXY", "LOCAL"]
HostPort: TypeAlias = tuple[str, int]


class NeedsMore(enum.Enum):
    NEEDS_MORE = "needs more bytes"


NEEDS_MORE = NeedsMore.NEEDS_MORE
"""The header is not complete yet: call again with more bytes."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the load balancer said about the connection it relays."""

    version: Literal[1, 2]
    command: Command
    """``PROXY``: relayed for ``source``; ``LOCAL`` (v2): the balancer's own
    connection (a health check): use the real peer address."""
    family: Literal["TCP4", "TCP6", "UNKNOWN"]
    """``UNKNOWN`` (v1 ``UNKNOWN``, v2 ``AF_UNSPEC`` or ``AF_UNIX``): no usable address."""
    source: HostPort | None = None
    """The client's address, or ``None`` when the real peer address stands."""
    destination: HostPort | None = None
    """The address the client connected to on the balancer."""


ParseResult: TypeAlias = NeedsMore | tuple[ProxyHeader, int]


def parse_untrusted(buffer: bytes | bytearray, *, limit: int = DEFAULT_LIMIT) -> ParseResult:
    """Parse a PROXY header at the start of ``buffer`` (v1 or v2, told by its first bytes).

    Returns :data:`NEEDS_MORE`, or the header and how many bytes of ``buffer``
    it took (the rest belongs to the relayed stream).  Raises :class:`BadInput`.
    """
    data = bytes(buffer[: max(V1_MAX, limit)])
    if not data:
        return NEEDS_MORE
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data, limit)
    raise BadInput("not a PROXY protocol header")


# -- version 1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" (section 2.1) ----


def _parse_v1(data: bytes) -> ParseResult:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise BadInput("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise BadInput("PROXY v1 line longer than 107 bytes")
        if b"\n" in data:
            raise BadInput("PROXY v1 line not ended by CRLF")
        return NEEDS_MORE
    line = data[len(V1_PREFIX) : end]
    consumed = end + 2
    if b"\n" in line or b"\r" in line:
        raise BadInput("PROXY v1 line not ended by CRLF")
    if line.startswith(b"UNKNOWN") and line[7:8] in (b"", b" "):
        # Section 2.1: the receiver ignores whatever follows UNKNOWN.
        return ProxyHeader(1, "PROXY", "UNKNOWN"), consumed
    fields = line.split(b" ")
    if len(fields) != 5:
        raise BadInput("PROXY v1 line needs protocol, two addresses and two ports")
    protocol, source, destination, source_port, destination_port = fields
    if protocol == b"TCP4":
        family: Literal["TCP4", "TCP6"] = "TCP4"
        version = 4
    elif protocol == b"TCP6":
        family = "TCP6"
        version = 6
    else:
        raise BadInput("PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN")
    header = ProxyHeader(
        1,
        "PROXY",
        family,
        (_v1_address(source, version), _v1_port(source_port)),
        (_v1_address(destination, version), _v1_port(destination_port)),
    )
    return header, consumed


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput("PROXY v1 address is not an IP address") from None
    if address.version != version:
        raise BadInput("PROXY v1 address does not match its protocol")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not (1 <= len(text) <= 5 and text.isdigit()) or int(text) > 65535:
        raise BadInput("PROXY v1 port is not a number in 0..65535")
    return int(text)


# -- version 2: binary (section 2.2) ----------------------------------------------

_COMMANDS: dict[int, Command] = {0x0: "LOCAL", 0x1: "PROXY"}
_FAMILY_INET, _FAMILY_INET6, _FAMILY_UNIX = 0x1, 0x2, 0x3
_ADDRESS_LENGTH = {0x0: 0, _FAMILY_INET: 12, _FAMILY_INET6: 36, _FAMILY_UNIX: 216}


def _parse_v2(data: bytes, limit: int) -> ParseResult:
    signature = data[: len(V2_SIGNATURE)]
    if signature != V2_SIGNATURE[: len(signature)]:
        raise BadInput("not a PROXY protocol header")
    if len(data) < V2_FIXED:
        return NEEDS_MORE
    version_command, family_protocol = data[12], data[13]
    length = int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2:
        raise BadInput("PROXY v2 header of an unknown version")
    command = _COMMANDS.get(version_command & 0x0F)
    if command is None:
        raise BadInput("PROXY v2 command must be LOCAL or PROXY")
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family not in _ADDRESS_LENGTH or protocol > 2:
        raise BadInput("PROXY v2 address family or protocol unknown")
    if V2_FIXED + length > limit:
        raise BadInput(f"PROXY v2 header longer than {limit} bytes")
    if len(data) < V2_FIXED + length:
        return NEEDS_MORE
    body = data[V2_FIXED : V2_FIXED + length]
    address_length = _ADDRESS_LENGTH[family]
    if length < address_length:
        raise BadInput("PROXY v2 header too short for its address family")
    _check_tlvs(body[address_length:])
    consumed = V2_FIXED + length
    if command == "LOCAL" or family not in (_FAMILY_INET, _FAMILY_INET6):
        # Section 2.2: LOCAL, AF_UNSPEC and AF_UNIX keep the real peer address.
        return ProxyHeader(2, command, "UNKNOWN"), consumed
    size = 4 if family == _FAMILY_INET else 16
    source = ipaddress.ip_address(body[:size])
    destination = ipaddress.ip_address(body[size : 2 * size])
    ports = body[2 * size : 2 * size + 4]
    header = ProxyHeader(
        2,
        command,
        "TCP4" if family == _FAMILY_INET else "TCP6",
        (str(source), int.from_bytes(ports[:2], "big")),
        (str(destination), int.from_bytes(ports[2:], "big")),
    )
    return header, consumed


def _check_tlvs(tlvs: bytes) -> None:
    """Section 2.2.7: type (1), length (2), value; skipped, but they must fit exactly."""
    offset = 0
    while offset < len(tlvs):
        if offset + 3 > len(tlvs):
            raise BadInput("PROXY v2 TLV cut short")
        offset += 3 + int.from_bytes(tlvs[offset + 1 : offset + 3], "big")
        if offset > len(tlvs):
            raise BadInput("PROXY v2 TLV longer than the header")


# -- who may send it ------------------------------------------------------------


class ProxyProtocolPolicy:
    """Which peers must start with a PROXY header (the trusted load balancers)."""

    __slots__ = ("limit", "trusted")

    def __init__(self, trusted: tuple[Network, ...] = (), *, limit: int = DEFAULT_LIMIT) -> None:
        self.trusted = trusted
        self.limit = limit

    def expects_header(self, host: str) -> bool:
        """True for a trusted peer (every peer when ``trusted`` is empty)."""
        if not self.trusted:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)
