"""Read the UDP datagrams of a pcap or pcapng file (tcpdump's, Wireshark's, udpkit's).

Rule: a capture file is untrusted input.  The file formats and the packet
headers are decoded by ``dpkt`` (no hand-written parser here); whatever is
wrong with the file as a whole (not a capture, truncated, a block that lies
about its length, an unsupported link type) raises :class:`CaptureError`,
one line, and nothing else escapes :func:`read_capture_untrusted`.  A packet
that is merely not a whole UDP datagram (ARP, TCP, a fragment, a datagram cut
by the snap length, a header that does not decode) is skipped and counted by
reason in :attr:`Capture.skipped`.

The file is read through :class:`_BoundedFile`, which refuses any read past
the end of the file before it happens: a record claiming 4 GiB in a small
file is a truncated file, not a 4 GiB allocation, and a file cut inside a
record is an error, not a silently shorter packet.
"""

from __future__ import annotations

import io
import ipaddress
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Any

from udpkit.core.errors import UsageError
from udpkit.core.handler import Address

PCAP_MAGICS = frozenset({
    bytes.fromhex("a1b2c3d4"), bytes.fromhex("d4c3b2a1"),  # microseconds, either byte order
    bytes.fromhex("a1b23c4d"), bytes.fromhex("4d3cb2a1"),  # nanoseconds
})
PCAPNG_MAGIC = bytes.fromhex("0a0d0d0a")
"""The first four bytes of a pcapng file (its Section Header Block type)."""

# Link types (https://www.tcpdump.org/linktypes.html) and what they carry.
LINKTYPE_NULL = 0          # BSD loopback: 4-byte address family
LINKTYPE_ETHERNET = 1      # DLT_EN10MB: tcpdump on lo and on Ethernet
LINKTYPE_RAW = 101         # raw IPv4 or IPv6
LINKTYPE_LOOP = 108        # OpenBSD loopback
LINKTYPE_LINUX_SLL = 113   # tcpdump -i any (libpcap < 1.10)
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # tcpdump -i any (libpcap >= 1.10)
_LEGACY_RAW = (12, 14)     # DLT_RAW as some systems' libpcap numbered it

LINK_TYPE_NAMES: Mapping[int, str] = MappingProxyType({
    LINKTYPE_NULL: "NULL", LINKTYPE_ETHERNET: "EN10MB", LINKTYPE_RAW: "RAW",
    LINKTYPE_LOOP: "LOOP", LINKTYPE_LINUX_SLL: "LINUX_SLL", LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6", LINKTYPE_LINUX_SLL2: "LINUX_SLL2", 12: "RAW", 14: "RAW",
})
"""The link types udpkit reads, by number."""

SKIP_REASONS = ("not IP", "not UDP", "fragment", "clipped", "malformed")
"""Why a packet of a readable file gave no datagram (the keys of :attr:`Capture.skipped`):
not IPv4/IPv6; another protocol (TCP, ICMP...); an IP fragment; captured shorter than
the datagram (the snap length); headers that do not decode."""


class CaptureError(UsageError):
    """The capture file cannot be read (one line, the file's name first).

    The only error :func:`read_capture_untrusted` raises.
    """


@dataclass(frozen=True, slots=True)
class Datagram:
    """One UDP datagram found in a capture."""

    time: float
    """When it was captured (seconds since the epoch, as the file says)."""
    source: Address
    destination: Address
    payload: bytes


@dataclass(frozen=True, slots=True)
class Capture:
    """What a capture file holds, as far as UDP goes."""

    path: str
    format: str
    """``pcap`` or ``pcapng``."""
    link_type: int
    packets: int
    """Packet records read."""
    datagrams: tuple[Datagram, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Packets that gave no datagram, by reason (:data:`SKIP_REASONS`)."""

    @property
    def link_type_name(self) -> str:
        return LINK_TYPE_NAMES.get(self.link_type, str(self.link_type))


class _Truncated(Exception):
    pass


class _BoundedFile:
    """A read-only file that raises instead of reading past its end.

    A read that starts exactly at the end returns ``b""`` (the reader's normal
    end); a second such read means a record header was followed by nothing,
    which :func:`_records` reports as a truncated file.
    """

    def __init__(self, handle: IO[bytes], size: int, name: str) -> None:
        self._handle = handle
        self.size = size
        self.name = name
        self.empty_reads = 0

    def read(self, size: int = -1) -> bytes:
        position = self._handle.tell()
        if size < 0:
            raise _Truncated("a block length is smaller than its own header")
        if size == 0:
            return b""
        if position >= self.size:
            self.empty_reads += 1
            return b""
        if position + size > self.size:
            raise _Truncated(f"a record of {size} bytes at offset {position} runs past the end "
                             f"of the file ({self.size} bytes)")
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


def read_capture_untrusted(path: str | os.PathLike[str]) -> Capture:
    """Every UDP datagram of the pcap or pcapng file at ``path``, in file order.

    Raises :class:`CaptureError` (and nothing else) when the file cannot be
    opened or is not a readable capture.
    """
    name = os.fspath(path)
    try:
        handle = open(name, "rb")  # noqa: SIM115 (closed below, whatever happens)
    except OSError as exc:
        raise CaptureError(f"{name}: {exc.strerror or exc}") from None
    try:
        return _read_guarded(handle, os.fstat(handle.fileno()).st_size, name)
    finally:
        handle.close()


def parse_capture_untrusted(data: bytes, name: str = "<bytes>") -> Capture:
    """:func:`read_capture_untrusted` of a file's contents held in memory."""
    return _read_guarded(io.BytesIO(data), len(data), name)


def _read_guarded(handle: IO[bytes], size: int, name: str) -> Capture:
    try:
        return _read(_BoundedFile(handle, size, name), name)
    except CaptureError:
        raise
    except _Truncated as exc:
        raise CaptureError(f"{name}: truncated or malformed capture file: {exc}") from None
    except Exception as exc:  # dpkt's errors are ValueError, struct.error, NeedData...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CaptureError(f"{name}: malformed capture file: {detail}") from None


def _read(file: _BoundedFile, name: str) -> Capture:
    import dpkt

    if file.size < 4:
        raise CaptureError(f"{name}: not a pcap or pcapng file (only {file.size} bytes)")
    magic = file.read(4)
    file.seek(0)
    if magic in PCAP_MAGICS:
        reader: Any = dpkt.pcap.Reader(file)
        kind = "pcap"
    elif magic == PCAPNG_MAGIC:
        reader = dpkt.pcapng.Reader(file)
        kind = "pcapng"
    else:
        raise CaptureError(f"{name}: not a pcap or pcapng file (it starts with {magic.hex()})")
    link_type = int(reader.datalink())
    if link_type not in LINK_TYPE_NAMES:
        known = ", ".join(sorted(set(LINK_TYPE_NAMES.values())))
        raise CaptureError(f"{name}: link type {link_type} is not supported (udpkit reads "
                           f"{known})")
    decode = _link_decoder(link_type)
    datagrams: list[Datagram] = []
    skipped: Counter[str] = Counter()
    packets = 0
    for timestamp, frame in reader:
        if file.empty_reads > 1:
            break
        packets += 1
        try:
            outcome = _datagram(decode(frame), float(timestamp))
        except Exception:  # a packet dpkt cannot decode: counted, the file goes on
            outcome = "malformed"
        if isinstance(outcome, Datagram):
            datagrams.append(outcome)
        else:
            skipped[outcome] += 1
    if file.empty_reads > 1:
        raise CaptureError(f"{name}: truncated capture file: its last record has no data")
    return Capture(name, kind, link_type, packets, tuple(datagrams), dict(skipped))


def _link_decoder(link_type: int) -> Any:
    """A function from one frame's bytes to a dpkt IP/IP6 object, or anything else."""
    import dpkt

    if link_type == LINKTYPE_ETHERNET:
        return lambda frame: dpkt.ethernet.Ethernet(frame).data
    if link_type == LINKTYPE_LINUX_SLL:
        return lambda frame: dpkt.sll.SLL(frame).data
    if link_type == LINKTYPE_LINUX_SLL2:
        return lambda frame: dpkt.sll2.SLL2(frame).data
    if link_type in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return lambda frame: dpkt.loopback.Loopback(frame).data
    return _raw_ip  # RAW, IPV4, IPV6


def _raw_ip(frame: bytes) -> Any:
    import dpkt

    version = frame[0] >> 4 if frame else 0
    if version == 4:
        return dpkt.ip.IP(frame)
    if version == 6:
        return dpkt.ip6.IP6(frame)
    return None


def _datagram(packet: Any, timestamp: float) -> Datagram | str:
    """The datagram in a decoded IP packet, or why there is none."""
    import dpkt

    if isinstance(packet, dpkt.ip.IP):
        if packet.p != dpkt.ip.IP_PROTO_UDP:
            return "not UDP"
        if packet.mf or packet.offset:
            return "fragment"
        source = str(ipaddress.IPv4Address(packet.src))
        destination = str(ipaddress.IPv4Address(packet.dst))
    elif isinstance(packet, dpkt.ip6.IP6):
        if dpkt.ip.IP_PROTO_FRAGMENT in packet.extension_hdrs:
            return "fragment"
        if packet.p != dpkt.ip.IP_PROTO_UDP:
            return "not UDP"
        source = str(ipaddress.IPv6Address(packet.src))
        destination = str(ipaddress.IPv6Address(packet.dst))
    else:
        return "not IP"
    udp = packet.data
    if not isinstance(udp, dpkt.udp.UDP):
        return "clipped" if len(bytes(udp)) < 8 else "malformed"
    if udp.ulen < 8:
        return "malformed"
    payload = bytes(udp.data)
    size = udp.ulen - 8
    if len(payload) < size:
        return "clipped"
    return Datagram(timestamp, (source, udp.sport), (destination, udp.dport), payload[:size])
