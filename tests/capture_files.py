"""Capture files for the tests, built with dpkt: every link type tcpdump writes on Linux.

Not a tier: a helper the unit, fuzz, net and peers tests import.
"""

from __future__ import annotations

import io
import socket
from typing import Any

import dpkt

from udpkit.capture.reader import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)


def ip_udp(source: tuple[str, int], destination: tuple[str, int], payload: bytes,
           **ip_fields: Any) -> Any:
    """An IPv4 or IPv6 packet (dpkt object) carrying one UDP datagram."""
    udp = dpkt.udp.UDP(sport=source[1], dport=destination[1], data=payload,
                       ulen=8 + len(payload))
    if ":" in source[0]:
        return dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, source[0]),
                            dst=socket.inet_pton(socket.AF_INET6, destination[0]),
                            nxt=dpkt.ip.IP_PROTO_UDP, hlim=64, plen=len(udp), data=udp)
    return dpkt.ip.IP(src=socket.inet_aton(source[0]), dst=socket.inet_aton(destination[0]),
                      p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp, **ip_fields)


def frame(link_type: int, packet: Any) -> bytes:
    """``packet`` (IP or IPv6) in the link layer of ``link_type``."""
    six = isinstance(packet, dpkt.ip6.IP6)
    ethertype = dpkt.ethernet.ETH_TYPE_IP6 if six else dpkt.ethernet.ETH_TYPE_IP
    if link_type == LINKTYPE_ETHERNET:
        return bytes(dpkt.ethernet.Ethernet(dst=bytes(6), src=bytes(6), type=ethertype,
                                            data=packet))
    if link_type == LINKTYPE_LINUX_SLL:
        return bytes(dpkt.sll.SLL(type=0, hrd=772, hlen=6, hdr=bytes(8), ethtype=ethertype,
                                  data=packet))
    if link_type == LINKTYPE_LINUX_SLL2:
        return bytes(dpkt.sll2.SLL2(ethtype=ethertype, intindex=1, hrd=772, type=0, hlen=6,
                                    hdr=bytes(8), data=packet))
    if link_type == LINKTYPE_NULL:
        family = 24 if six else 2  # AF_INET6 as BSD numbers it, AF_INET
        return family.to_bytes(4, "little") + bytes(packet)
    return bytes(packet)  # RAW, IPV4, IPV6


def pcap_file(link_type: int, frames: list[tuple[float, bytes]], *, nano: bool = False) -> bytes:
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, snaplen=65535, linktype=link_type, nano=nano)
    for when, data in frames:
        writer.writepkt(data, when)
    return out.getvalue()


def pcapng_file(link_type: int, frames: list[tuple[float, bytes]]) -> bytes:
    out = io.BytesIO()
    writer = dpkt.pcapng.Writer(out, snaplen=65535, linktype=link_type)
    for when, data in frames:
        writer.writepkt(data, when)
    return out.getvalue()


LINK_TYPES = {
    "EN10MB": LINKTYPE_ETHERNET, "LINUX_SLL": LINKTYPE_LINUX_SLL,
    "LINUX_SLL2": LINKTYPE_LINUX_SLL2, "RAW": LINKTYPE_RAW, "IPV4": LINKTYPE_IPV4,
    "NULL": LINKTYPE_NULL,
}


def conversation(link_type: int = LINKTYPE_ETHERNET, *, host: str = "127.0.0.1",
                 server_port: int = 9999, names: tuple[bytes, ...] = (b"Michael", b"Tracy"),
                 start: float = 1_700_000_000.0, gap: float = 0.01) -> list[tuple[float, bytes]]:
    """A greeting conversation: each name from one client, then its reply."""
    client = (host, 40000)
    server = (host, server_port)
    frames = []
    when = start
    for name in names:
        frames.append((when, frame(link_type, ip_udp(client, server, name))))
        frames.append((when + gap / 2,
                       frame(link_type, ip_udp(server, client, b"Hello, " + name + b"!"))))
        when += gap
    return frames
