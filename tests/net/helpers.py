"""Raw-socket helpers for tests against a running server (no udpkit client involved)."""

from __future__ import annotations

import asyncio
import os
import socket

from udpkit import _native
from udpkit.core.counters import CounterSnapshot
from udpkit.server import Server


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class RawUdp:
    """A plain non-blocking UDP socket for poking a server with any bytes."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes, address: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, address)

    async def recv(self, timeout: float = 2.0) -> bytes | None:
        try:
            async with asyncio.timeout(timeout):
                data, _ = await asyncio.get_running_loop().sock_recvfrom(self.sock, 70000)
        except TimeoutError:
            return None
        return data


async def wait_for_counters(server: Server, transport: str, received: int,
                            timeout: float = 5.0) -> CounterSnapshot:
    """Wait until ``received`` requests are accounted for, then return the counters."""
    async with asyncio.timeout(timeout):
        while True:
            snapshot = server.stats()[transport]
            if snapshot.received >= received and snapshot.accounted == snapshot.received:
                return snapshot
            await asyncio.sleep(0.005)


async def flood_unread_then_drain(server: Server, requests: bytes) -> tuple[bytes, CounterSnapshot]:
    """Send ``requests`` on a TCP connection with a small receive buffer that does not
    read; once the server aborts it at its write timeout, read what the kernel took.
    What was read and the server's TCP counters."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, requests)
        async with asyncio.timeout(20):
            while not server.stats()["tcp"].closed_write_timeout:
                await asyncio.sleep(0.02)
        received = bytearray()
        async with asyncio.timeout(20):  # what the kernel took, the client now reads
            while True:
                try:
                    chunk = await loop.sock_recv(sock, 1 << 20)
                except ConnectionError:
                    break
                if not chunk:
                    break
                received += chunk
    return bytes(received), server.stats()["tcp"]


def expect_fast(tcp_path: str) -> bool:
    """Whether a TCP server test on ``tcp_path`` runs on the C line reader: not on
    ``pure``, nor where the extension is missing or ``UDPKIT_NO_FASTPATH=1`` (the
    second run of ``make test``, which runs every param on the pure path)."""
    forced_pure = os.environ.get("UDPKIT_NO_FASTPATH", "") not in ("", "0")
    return tcp_path != "pure" and _native.built() and not forced_pure
