"""Capture files: what the reader takes from every link type, what it skips, the one error.

Files are built in memory with dpkt (tests/capture_files.py); the writer's
output is read back by the reader (and by tcpdump in tests/peers).
"""

from __future__ import annotations

import io

import dpkt
import pytest

from tests.capture_files import (
    LINK_TYPES,
    conversation,
    frame,
    ip_udp,
    pcap_file,
    pcapng_file,
)
from udpkit.capture import CaptureError, PcapRecorder, parse_capture_untrusted
from udpkit.capture.reader import LINKTYPE_ETHERNET, LINKTYPE_IPV6, LINKTYPE_RAW


@pytest.mark.parametrize("link_type", LINK_TYPES.values(), ids=LINK_TYPES.keys())
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_every_link_type_gives_the_datagrams(link_type: int, host: str) -> None:
    if link_type == LINK_TYPES["IPV4"] and host == "::1":
        link_type = LINKTYPE_IPV6
    data = pcap_file(link_type, conversation(link_type, host=host))
    capture = parse_capture_untrusted(data)
    assert [d.payload for d in capture.datagrams] == [
        b"Michael", b"Hello, Michael!", b"Tracy", b"Hello, Tracy!"]
    first = capture.datagrams[0]
    assert first.source == (host, 40000)
    assert first.destination == (host, 9999)
    assert first.time == pytest.approx(1_700_000_000.0)
    assert capture.packets == 4
    assert capture.skipped == {}


def test_pcapng_and_nanosecond_pcap() -> None:
    frames = conversation()
    for data in (pcapng_file(LINKTYPE_ETHERNET, frames),
                 pcap_file(LINKTYPE_ETHERNET, frames, nano=True)):
        capture = parse_capture_untrusted(data)
        assert len(capture.datagrams) == 4
        assert capture.datagrams[2].time == pytest.approx(1_700_000_000.01, abs=1e-6)
    assert parse_capture_untrusted(pcapng_file(LINKTYPE_ETHERNET, frames)).format == "pcapng"


def test_what_is_not_a_whole_datagram_is_counted_by_reason() -> None:
    client, server = ("10.0.0.1", 40000), ("10.0.0.2", 9999)
    tcp = dpkt.ip.IP(src=bytes(4), dst=bytes(4), p=dpkt.ip.IP_PROTO_TCP,
                     data=dpkt.tcp.TCP(sport=1, dport=2))
    arp = bytes(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_ARP, data=b"\0" * 28))
    fragment = ip_udp(client, server, b"x" * 100, mf=1)
    later_fragment = ip_udp(client, server, b"x" * 100, offset=64)
    whole = frame(LINKTYPE_ETHERNET, ip_udp(client, server, b"a" * 100))
    frames = [
        (1.0, frame(LINKTYPE_ETHERNET, tcp)),
        (2.0, arp),
        (3.0, frame(LINKTYPE_ETHERNET, fragment)),
        (4.0, frame(LINKTYPE_ETHERNET, later_fragment)),
        (5.0, whole[:60]),  # cut by the snap length
        (6.0, b"\xff" * 10),  # an Ethernet header cut short: malformed
        (7.0, whole),
    ]
    capture = parse_capture_untrusted(pcap_file(LINKTYPE_ETHERNET, frames))
    assert [d.payload for d in capture.datagrams] == [b"a" * 100]
    assert capture.packets == 7
    assert capture.skipped == {"not UDP": 1, "not IP": 1, "fragment": 2, "clipped": 1,
                               "malformed": 1}


def test_an_ipv6_fragment_is_skipped() -> None:
    udp = dpkt.udp.UDP(sport=1, dport=9999, data=b"x" * 16, ulen=24)
    fragment_header = dpkt.ip6.IP6FragmentHeader(nxt=dpkt.ip.IP_PROTO_UDP, frag_off_resv_m=1)
    packet = dpkt.ip6.IP6(src=bytes(16), dst=bytes(16), nxt=dpkt.ip.IP_PROTO_FRAGMENT,
                          data=bytes(fragment_header) + bytes(udp))
    packet.plen = len(packet.data)
    capture = parse_capture_untrusted(pcap_file(LINKTYPE_RAW, [(1.0, bytes(packet))]))
    assert capture.datagrams == ()
    assert capture.skipped == {"fragment": 1}


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "not a pcap or pcapng file (only 0 bytes)"),
    (b"# README\n", "not a pcap or pcapng file (it starts with 23205245)"),
    (pcap_file(LINKTYPE_ETHERNET, conversation())[:-5], "runs past the end of the file"),
    (pcap_file(LINKTYPE_ETHERNET, conversation())[:30], "truncated"),
    (pcap_file(105, []), "link type 105 is not supported"),
    (pcapng_file(LINKTYPE_ETHERNET, conversation())[:-3], "truncated"),
    (bytes.fromhex("0a0d0d0a") + b"\x08\0\0\0" + bytes(20), "malformed capture file"),
], ids=["empty", "text", "cut-in-record", "cut-in-header", "wifi", "pcapng-cut", "pcapng-bad"])
def test_a_file_that_cannot_be_read_is_one_capture_error(data: bytes, needle: str) -> None:
    with pytest.raises(CaptureError) as caught:
        parse_capture_untrusted(data, "f.pcap")
    message = str(caught.value)
    assert message.startswith("f.pcap: ")
    assert needle in message
    assert "\n" not in message


def test_a_header_that_claims_more_than_the_file_holds_is_not_read() -> None:
    """Regression guard: a record claiming 4 GiB must be a truncated file, not an
    attempt to allocate 4 GiB."""
    data = bytearray(pcap_file(LINKTYPE_ETHERNET, conversation()))
    data[24 + 8:24 + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # the first caplen
    with pytest.raises(CaptureError, match="runs past the end"):
        parse_capture_untrusted(bytes(data))


def test_every_prefix_of_a_file_reads_or_fails_with_the_one_error() -> None:
    for data in (pcap_file(LINKTYPE_ETHERNET, conversation()),
                 pcapng_file(LINKTYPE_ETHERNET, conversation())):
        whole = parse_capture_untrusted(data).datagrams
        read = []
        for end in range(len(data)):
            try:
                capture = parse_capture_untrusted(data[:end])
            except CaptureError:
                continue
            assert capture.datagrams == whole[:len(capture.datagrams)]
            read.append(len(capture.datagrams))
        # Only the cuts between records read, one per record: the file header alone
        # (no datagram) and each whole record but the last.
        assert read == [0, 1, 2, 3]


def test_the_recorder_writes_what_the_reader_reads() -> None:
    out = io.BytesIO()
    ticks = iter(range(100))
    recorder = PcapRecorder(out, clock=lambda: 1000.0 + next(ticks) / 1000)
    recorder.datagram(client=("127.0.0.1", 40000), proxy=("127.0.0.1", 9999),
                      payload=b"Michael", to_server=True)
    recorder.datagram(client=("127.0.0.1", 40000), proxy=("127.0.0.1", 9999),
                      payload=b"Hello, Michael!", to_server=False)
    recorder.datagram(client=("::1", 40001), proxy=("::1", 9999), payload=b"", to_server=True)
    flow = recorder.tcp_flow(client=("127.0.0.1", 40002), proxy=("127.0.0.1", 9999))
    flow.data(True, b"Tracy\n")
    flow.data(False, b"Hello, Tracy!\n")
    flow.end(True)
    flow.end(False)
    data = out.getvalue()
    capture = parse_capture_untrusted(data)
    assert [(d.source, d.destination, d.payload) for d in capture.datagrams] == [
        (("127.0.0.1", 40000), ("127.0.0.1", 9999), b"Michael"),
        (("127.0.0.1", 9999), ("127.0.0.1", 40000), b"Hello, Michael!"),
        (("::1", 40001), ("::1", 9999), b""),
    ]
    assert capture.skipped == {"not UDP": 8}  # SYN, SYN-ACK, ACK, 2 data, 2 FIN, last ACK
    assert recorder.packets == capture.packets == 11
    assert [d.time for d in capture.datagrams] == pytest.approx([1000.0, 1000.001, 1000.002])


def test_tcp_numbers_count_the_bytes_of_each_side() -> None:
    out = io.BytesIO()
    recorder = PcapRecorder(out, clock=lambda: 1.0)
    flow = recorder.tcp_flow(client=("127.0.0.1", 40002), proxy=("127.0.0.1", 9999))
    flow.data(True, b"a" * 70000)  # split into segments of at most 32 KiB
    flow.data(False, b"ok\n")
    flow.reset()
    flow.data(True, b"after the reset: not recorded")
    segments = []
    for _, raw in dpkt.pcap.Reader(io.BytesIO(out.getvalue())):
        segments.append(dpkt.ethernet.Ethernet(raw).data.data)
    syn, syn_ack, ack = segments[:3]
    data = segments[3:6]
    reply, rst = segments[6:]
    assert [len(s.data) for s in data] == [32768, 32768, 4464]
    assert data[0].seq == syn.seq + 1 == ack.seq
    assert data[1].seq == data[0].seq + 32768
    assert reply.seq == syn_ack.seq + 1
    assert reply.ack == syn.seq + 1 + 70000
    assert rst.flags & dpkt.tcp.TH_RST
    assert len(segments) == 8


def test_a_write_error_stops_the_recording_not_the_caller() -> None:
    class Full(io.BytesIO):
        def write(self, data: bytes, /) -> int:  # type: ignore[override]
            if self.tell() > 100:
                raise OSError(28, "No space left on device")
            return super().write(data)

    recorder = PcapRecorder(Full(), clock=lambda: 1.0)
    for _ in range(5):
        recorder.datagram(client=("127.0.0.1", 1), proxy=("127.0.0.1", 2), payload=b"x" * 50,
                          to_server=True)
    assert recorder.failed
    assert recorder.packets == 1


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
@pytest.mark.parametrize("payload", [b"", b"x", b"Michael", bytes(range(256)) * 3])
def test_every_checksum_is_the_one_dpkt_computes(client: str, payload: bytes) -> None:
    """The recorder packs its headers itself: each checksum must be what a reader checks."""
    out = io.BytesIO()
    recorder = PcapRecorder(out, clock=lambda: 1.0)
    proxy = "127.0.0.1" if client == "::ffff:127.0.0.1" else client  # a dual-stack socket
    recorder.datagram(client=(client, 40000), proxy=(proxy, 9999), payload=payload,
                      to_server=True)
    flow = recorder.tcp_flow(client=(client, 40001), proxy=(proxy, 9999))
    flow.data(True, payload)
    checked = 0
    for _, raw in dpkt.pcap.Reader(io.BytesIO(out.getvalue())):
        packet = dpkt.ethernet.Ethernet(raw).data
        segment = packet.data
        written = segment.sum
        segment.sum = 0
        if isinstance(packet, dpkt.ip.IP):
            header_sum = packet.sum
            packet.sum = 0
            rebuilt = dpkt.ip.IP(bytes(packet))
            assert rebuilt.sum == header_sum
        else:
            rebuilt = dpkt.ip6.IP6(bytes(packet))
        assert rebuilt.data.sum == written
        checked += 1
    assert checked == 1 + 3 + (1 if payload else 0)  # no segment for no data
