"""The kernel's drop counter of a UDP socket, read without waiting for a next datagram."""

from __future__ import annotations

import socket

from udpkit.server.kernel_drops import _proc_drops, socket_drops


def test_drops_at_the_tail_of_a_flood_are_read_at_once() -> None:
    """Regression (issue 16, item 15): tail drops were only seen as ancillary data of
    the next datagram, so a flood's last drops were never counted."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        assert socket_drops(receiver) == 0
        for _ in range(300):
            sender.sendto(b"x" * 200, receiver.getsockname())
        queued = 0
        receiver.setblocking(False)
        while True:
            try:
                receiver.recv(300)
            except BlockingIOError:
                break
            queued += 1
        drops = socket_drops(receiver)
        assert drops is not None
        assert drops == 300 - queued > 0  # every datagram either queued or counted
        assert _proc_drops(receiver) == drops  # the /proc fallback reads the same counter
    finally:
        receiver.close()
        sender.close()
