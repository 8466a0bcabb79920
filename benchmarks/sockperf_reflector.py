"""A udpkit handler that answers sockperf's ping-pong, as ``sockperf server`` does.

Rule: a benchmark peer, never part of udpkit.  sockperf's messages start with a
14-byte header in network byte order: a 64-bit sequence number, 16 bits of
flags (1: sent by the client, 2: a reply is asked for, 4: warm-up) and a 32-bit
length (sockperf's src/message.h).  The server sends the message back unchanged
but for the client flag, cleared, and only when a reply is asked for.

    udpkit serve --app-dir benchmarks sockperf_reflector:handler --no-tcp --port 11111
    sockperf ping-pong -i 127.0.0.1 -p 11111 -t 5
"""

from __future__ import annotations

from udpkit.core.handler import Peer

HEADER = 14
CLIENT, PONG = 1, 2
FLAGS_LOW = 9  # the low byte of the big-endian 16-bit flags at offset 8


def handler(request: bytes, peer: Peer) -> bytes | None:
    """The request with its client flag cleared, if it asks for a reply."""
    if len(request) < HEADER or not request[FLAGS_LOW] & PONG:
        return None
    return b"%b%c%b" % (request[:FLAGS_LOW], request[FLAGS_LOW] & ~CLIENT, request[FLAGS_LOW + 1:])
