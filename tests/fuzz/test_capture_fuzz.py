"""Any bytes given as a capture file give datagrams or the one CaptureError, never
another exception (property tests, bounded by hypothesis' example counts)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.capture_files import LINK_TYPES, conversation, pcap_file, pcapng_file
from udpkit.capture import Capture, CaptureError, parse_capture_untrusted

_VALID = [pcap_file(link_type, conversation(link_type)) for link_type in LINK_TYPES.values()]
_VALID += [pcapng_file(link_type, conversation(link_type)) for link_type in LINK_TYPES.values()]


def _read(data: bytes) -> Capture | None:
    try:
        capture = parse_capture_untrusted(data, "fuzz.pcap")
    except CaptureError as exc:
        message = str(exc)
    else:
        assert capture.packets == len(capture.datagrams) + sum(capture.skipped.values())
        return capture
    assert message.startswith("fuzz.pcap: ")
    assert "\n" not in message
    return None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    capture = _read(data)
    assert capture is None or isinstance(capture, Capture)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(_VALID), flips=st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_valid_files_with_bytes_changed_and_cut(base: bytes, flips: list[tuple[int, int]],
                                                cut: int | None) -> None:
    data = bytearray(base)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    capture = _read(bytes(data))
    assert capture is None or isinstance(capture, Capture)
