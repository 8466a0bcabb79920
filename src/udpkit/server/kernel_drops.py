"""How many datagrams the kernel dropped for a socket, asked of the kernel directly.

Rule: ``SO_RXQ_OVFL`` reports a socket's drop count only as ancillary data of the next
datagram received, so drops at the tail of a flood (nothing arrives after them) were never
counted.  :func:`socket_drops` reads the same counter (``sk_drops``) whenever it is asked:
``getsockopt(SO_MEMINFO)`` (Linux >= 4.6, index ``SK_MEMINFO_DROPS``), else the ``drops``
column of ``/proc/net/udp{,6}`` for the socket's inode.  ``None`` where neither exists.
The counter is 32 bits and wraps: :func:`drops_since` is the one rule turning two readings
into new drops, :class:`DropReader` keeps one socket's last reading (the proxy's sockets;
the server keeps its own where the C fast path can update it).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

SO_MEMINFO = 55  # include/uapi/asm-generic/socket.h
SK_MEMINFO_VARS = 9  # include/uapi/linux/sock_diag.h: ... SK_MEMINFO_DROPS is the 9th
SK_MEMINFO_DROPS = 8


def drops_since(seen: int, total: int) -> int:
    """Drops between an earlier reading ``seen`` and ``total`` of a socket's 32-bit counter."""
    return (total - seen) & 0xFFFFFFFF


class DropReader:
    """One socket's kernel drops not yet counted: :meth:`new` asks the kernel."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = 0

    def new(self, sock: socket.socket) -> int:
        """Drops since the last call (0 where the kernel cannot say, or once closed)."""
        if sock.fileno() < 0:
            return 0
        total = socket_drops(sock)
        if total is None:
            return 0
        fresh = drops_since(self.seen, total)
        self.seen = total & 0xFFFFFFFF
        return fresh


def socket_drops(sock: socket.socket) -> int | None:
    """The kernel's count of datagrams dropped for ``sock`` since it was created."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    except OSError:
        return _proc_drops(sock)
    if len(raw) < 4 * SK_MEMINFO_VARS:
        return _proc_drops(sock)
    return int(struct.unpack_from("=I", raw, 4 * SK_MEMINFO_DROPS)[0])


def _proc_drops(sock: socket.socket) -> int | None:
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as lines:
                next(lines, None)  # the header
                for line in lines:
                    fields = line.split()
                    if len(fields) >= 13 and fields[9] == str(inode):
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None
