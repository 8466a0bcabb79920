"""Write what passes through the proxy to a pcap file that tcpdump and Wireshark read.

Rule: the recorder is a tap, never a failure of the traffic it watches: the
proxy calls it after each forward, and an error writing the file (disk full)
stops the recording with one warning and a count, never the proxy.  The
file format is written by ``dpkt``; the headers (Ethernet with zero
addresses, the link type tcpdump writes on ``lo``, then IPv4 or IPv6, UDP or
TCP, checksums included: RFC 791, 8200, 768, 9293) are packed here with
:mod:`struct`: this side only writes, and packing by hand costs a fifth of
building dpkt objects, which matters for a tap on every forward.

Addresses: each packet goes between the client's address and the proxy's
listening address, as tcpdump on the client's side of the proxy would see
them.  TCP connections are synthesised whole: a three-way handshake when the
proxy has connected upstream, data segments whose sequence and
acknowledgement numbers count the bytes each side sent (so "Follow TCP
Stream" works), a FIN per direction, an RST when the proxy resets.  Data
larger than :data:`MAX_SEGMENT` is split into several segments.
"""

from __future__ import annotations

import array
import functools
import logging
import socket
import struct
import sys
import time
import weakref
from collections.abc import Callable
from typing import IO

from udpkit.capture.reader import LINKTYPE_ETHERNET
from udpkit.core.errors import UsageError
from udpkit.core.handler import Address

log = logging.getLogger("udpkit.capture")

MAX_SEGMENT = 32768
"""Largest TCP payload of one synthesised segment (bytes)."""
SNAP_LENGTH = 262144
"""The file's snap length: larger than any packet written."""
_FLUSH_EVERY = 1.0
"""Seconds between flushes of the file while recording."""

_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class PcapRecorder:
    """A pcap file being written; ``datagram`` and ``tcp_flow`` are the proxy's taps."""

    def __init__(self, file: IO[bytes], *, clock: Callable[[], float] = time.time,
                 path: str = "") -> None:
        import dpkt

        self._file = file
        self._clock = clock
        self.path = path
        self._writer = dpkt.pcap.Writer(file, snaplen=SNAP_LENGTH, linktype=LINKTYPE_ETHERNET,
                                        nano=True)
        self._addresses: weakref.WeakKeyDictionary[socket.socket, Address] = (
            weakref.WeakKeyDictionary())
        """Each listening socket's address, asked once (a socket gone, its entry too)."""
        self._next_flush = clock() + _FLUSH_EVERY
        self._isn = 1000
        self.packets = 0
        """Packets written."""
        self.failed = False
        """Writing failed once; nothing is recorded after that."""

    @classmethod
    def open(cls, path: str) -> PcapRecorder:
        """Create (or truncate) the file at ``path``; :class:`UsageError` if impossible."""
        try:
            file = open(path, "wb")  # noqa: SIM115 (the recorder owns it until close)
        except OSError as exc:
            raise UsageError(f"--pcap {path}: {exc.strerror or exc}") from None
        return cls(file, path=path)

    # -- taps ------------------------------------------------------------------

    def datagram(self, *, client: Address, proxy: socket.socket | Address, payload: bytes,
                 to_server: bool) -> None:
        """One datagram forwarded between ``client`` and the proxy's socket ``proxy``."""
        local = self._address_of(proxy)
        source, destination = (client, local) if to_server else (local, client)
        header = _UDP.pack(source[1], destination[1], _UDP.size + len(payload), 0)
        self._write(source, destination, _PROTO_UDP, header, payload)

    def tcp_flow(self, *, client: Address, proxy: Address) -> TcpFlow:
        """A TCP connection from ``client`` to the proxy at ``proxy``, now established."""
        self._isn = (self._isn * 1103515245 + 12345) % (1 << 31)
        return TcpFlow(self, client, proxy, client_isn=self._isn, server_isn=self._isn ^ 0x5A5A5A)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            self._fail(exc)

    # -- writing ---------------------------------------------------------------

    def _address_of(self, proxy: socket.socket | Address) -> Address:
        if isinstance(proxy, tuple):
            return proxy
        address = self._addresses.get(proxy)
        if address is None:
            try:
                name = proxy.getsockname()
                address = (str(name[0]), int(name[1]))
            except OSError:
                address = ("0.0.0.0", 0)
            self._addresses[proxy] = address
        return address

    def _write(self, source: Address, destination: Address, protocol: int, header: bytes,
               payload: bytes) -> None:
        """One packet: ``header`` (UDP or TCP, its checksum field zero) and ``payload``."""
        if self.failed:
            return
        src, dst = _packed(source[0]), _packed(destination[0])
        if len(src) != len(dst):  # an IPv4 peer of an IPv6 socket: both as IPv6
            src, dst = _as_ipv6(src), _as_ipv6(dst)
        length = len(header) + len(payload)
        if len(src) == 4:
            pseudo = src + dst + _PSEUDO4.pack(protocol, length)
        else:
            pseudo = src + dst + _PSEUDO6.pack(length, protocol)
        checksum = _checksum(pseudo + header + payload)
        if protocol == _PROTO_UDP and checksum == 0:
            checksum = 0xFFFF  # RFC 768: zero means "no checksum"
        offset = 6 if protocol == _PROTO_UDP else 16
        header = header[:offset] + checksum.to_bytes(2, "big") + header[offset + 2:]
        if len(src) == 4:
            ip = _IPV4.pack(0x45, 0, 20 + length, 0, 0x4000, 64, protocol, 0, src, dst)
            ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
            frame = _ETHERNET_IPV4 + ip + header + payload
        else:
            ip = _IPV6.pack(0x60000000, length, protocol, 64, src, dst)
            frame = _ETHERNET_IPV6 + ip + header + payload
        now = self._clock()
        try:
            self._writer.writepkt_time(frame, now)
            if now >= self._next_flush:
                self._file.flush()
                self._next_flush = now + _FLUSH_EVERY
        except OSError as exc:
            self._fail(exc)
            return
        self.packets += 1

    def _tcp(self, source: Address, destination: Address, *, seq: int, ack: int, flags: int,
             data: bytes = b"") -> None:
        header = _TCP.pack(source[1], destination[1], seq % (1 << 32), ack % (1 << 32),
                           5 << 4, flags, 65535, 0, 0)
        self._write(source, destination, _PROTO_TCP, header, data)

    def _fail(self, exc: OSError) -> None:
        if not self.failed:
            self.failed = True
            log.warning("recording to %s stopped: %s", self.path or "the pcap file",
                        exc.strerror or exc)


_PROTO_TCP, _PROTO_UDP = 6, 17
_ETHERNET_IPV4 = bytes(12) + b"\x08\x00"
_ETHERNET_IPV6 = bytes(12) + b"\x86\xdd"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO4 = struct.Struct("!xBH")
_PSEUDO6 = struct.Struct("!I3xB")
_LITTLE = sys.byteorder == "little"


@functools.lru_cache(maxsize=1024)
def _packed(host: str) -> bytes:
    """An address as its 4 or 16 bytes (unspecified if it does not parse)."""
    host = host.split("%", 1)[0]  # an IPv6 scope id has no place in a header
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.inet_pton(family, host)
    except OSError:
        return bytes(16 if family == socket.AF_INET6 else 4)


def _as_ipv6(address: bytes) -> bytes:
    return address if len(address) == 16 else bytes(10) + b"\xff\xff" + address


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: the one's complement of the one's
    complement sum of its 16-bit words, summed in C over an array of native words (the
    sum is byte-order independent; the result is swapped back)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    return ((total & 0xFF) << 8 | total >> 8) if _LITTLE else total


class TcpFlow:
    """One proxied TCP connection in the file: both byte streams, numbered."""

    def __init__(self, recorder: PcapRecorder, client: Address, proxy: Address, *,
                 client_isn: int, server_isn: int) -> None:
        self._recorder = recorder
        self.client = client
        self.proxy = proxy
        self._next = {True: client_isn + 1, False: server_isn + 1}
        """Next sequence number of each side (``True``: the client's)."""
        self._closed = {True: False, False: False}
        self._reset = False
        recorder._tcp(client, proxy, seq=client_isn, ack=0, flags=_SYN)
        recorder._tcp(proxy, client, seq=server_isn, ack=client_isn + 1, flags=_SYN | _ACK)
        recorder._tcp(client, proxy, seq=client_isn + 1, ack=server_isn + 1, flags=_ACK)

    def _ends(self, to_server: bool) -> tuple[Address, Address]:
        return (self.client, self.proxy) if to_server else (self.proxy, self.client)

    def data(self, to_server: bool, payload: bytes) -> None:
        """Bytes forwarded towards the server (``to_server``) or the client."""
        if self._reset or self._closed[to_server]:
            return
        source, destination = self._ends(to_server)
        for start in range(0, len(payload), MAX_SEGMENT):
            chunk = payload[start:start + MAX_SEGMENT]
            self._recorder._tcp(source, destination, seq=self._next[to_server],
                                ack=self._next[not to_server], flags=_PSH | _ACK, data=chunk)
            self._next[to_server] += len(chunk)

    def end(self, to_server: bool) -> None:
        """The side sending towards ``to_server`` closed its stream (FIN)."""
        if self._reset or self._closed[to_server]:
            return
        source, destination = self._ends(to_server)
        self._recorder._tcp(source, destination, seq=self._next[to_server],
                            ack=self._next[not to_server], flags=_FIN | _ACK)
        self._next[to_server] += 1
        self._closed[to_server] = True
        if all(self._closed.values()):
            # The last ACK, so the capture shows the connection closed on both sides.
            self._recorder._tcp(destination, source, seq=self._next[not to_server],
                                ack=self._next[to_server], flags=_ACK)

    def reset(self) -> None:
        """The proxy reset the connection: an RST towards the client."""
        if self._reset or all(self._closed.values()):
            return
        self._reset = True
        self._recorder._tcp(self.proxy, self.client, seq=self._next[False],
                            ack=self._next[True], flags=_RST | _ACK)
