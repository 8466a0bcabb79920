"""Capture files: read the UDP datagrams of a pcap/pcapng file (``bench --replay``) and
record what passes through the proxy as pcap (``proxy --pcap``).

Rule: ``dpkt`` does the file formats and the headers, imported only when a
file is read or written; reading is :func:`read_capture_untrusted`, whose only
error is :class:`CaptureError`.
"""

from udpkit.capture.reader import (
    Capture,
    CaptureError,
    Datagram,
    parse_capture_untrusted,
    read_capture_untrusted,
)
from udpkit.capture.writer import PcapRecorder, TcpFlow

__all__ = [
    "Capture",
    "CaptureError",
    "Datagram",
    "PcapRecorder",
    "TcpFlow",
    "parse_capture_untrusted",
    "read_capture_untrusted",
]
