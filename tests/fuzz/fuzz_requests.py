"""Coverage-guided fuzz target for the code that touches untrusted bytes.

Run by tests/fuzz/test_fuzz.py with atheris (libFuzzer) when it is installed,
for a bounded number of runs; each input is split into TCP segments and fed to
every framing (line or len16, chosen by the input, and raw), greeted, escaped
for a log, and classified by the rate limiter and access lists.  Any exception
other than the documented ones is a crash.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from udpkit.apps.greeting import greet
    from udpkit.core.escaping import escape_untrusted
    from udpkit.core.framing import Len16Framing, LineFraming, RawFraming
    from udpkit.core.sources import SourceClassifier, parse_networks

_CLASSIFIER = SourceClassifier(deny=parse_networks(["10.0.0.0/8"]), ipv6_prefix=48)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    framing = Len16Framing if provider.ConsumeBool() else LineFraming
    max_line = provider.ConsumeIntInRange(1, 64)
    cut_count = provider.ConsumeIntInRange(0, 8)
    cuts = sorted(provider.ConsumeIntInRange(0, 255) for _ in range(cut_count))
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    whole, split = framing(max_line), framing(max_line)
    expected = whole.feed(stream)
    got: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        cut = min(max(cut, start), len(stream))
        got.extend(split.feed(stream[start:cut]))
        start = cut
    if got != expected or whole.too_long != split.too_long:
        raise AssertionError("framing depends on segmentation")
    for message in expected:
        if len(message) > max_line:
            raise AssertionError("framed a message over the limit")
        reply = greet(message)
        if not (reply.startswith(b"Hello, ") and len(reply) == len(message) + 8):
            raise AssertionError("greeting changed length")
        if not escape_untrusted(message).isprintable():
            raise AssertionError("log text not printable")
    RawFraming(max_line).feed(stream)
    _CLASSIFIER.classify(stream.decode("latin-1"))  # hostile "host" text never crashes


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
