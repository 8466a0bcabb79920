"""Numbered request payloads and the rule that finds a request again by its reply.

Rule: a load test tells loss, duplication, reordering, lateness and wrong
replies apart only if every reply names its request.  So every payload carries
its sequence number (``{seq}`` in the template, required), and a
:class:`ReplyRule` says which reply answers which sequence number: exactly
(``greeting``, ``echo``: the reply is a known function of the payload, found by
a dictionary look-up) or by a regular expression whose ``{seq}`` captures the
number.  Everything here is pure: no sockets, no clock.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator

from udpkit.apps.greeting import greet
from udpkit.core.errors import UsageError

MAX_DATAGRAM = 65507
"""The largest UDP payload over IPv4."""

DEFAULT_TEMPLATE = "n{seq}"
"""The C reference load generator's payload: ``n<seq>``."""

_PAD = b"x"
_DIGITS = re.compile(rb"[0-9]+")
_MAX_CANDIDATES = 64


class PayloadTemplate:
    """Renders the payload of request ``seq``: the template, padded to ``size`` bytes.

    The template is a :meth:`str.format` string whose only field is ``seq``
    (``{seq}``, ``{seq:08d}``); ``{{`` and ``}}`` are literal braces.  Payloads
    shorter than ``size`` are padded with ``x`` (the C generator's padding).
    """

    def __init__(self, template: str = DEFAULT_TEMPLATE, *, size: int = 0) -> None:
        if size < 0 or size > MAX_DATAGRAM:
            raise UsageError(f"--size must be between 0 and {MAX_DATAGRAM} (got {size})")
        try:
            parts = list(string.Formatter().parse(template))
            template.format(seq=0)
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise UsageError(f"bad payload template {template!r}: {exc}") from None
        fields = [part[1] for part in parts if part[1] is not None]
        if "seq" not in fields or any(name != "seq" for name in fields):
            raise UsageError(
                f"payload template {template!r} must contain {{seq}} (and no other field) "
                "so that every reply can be matched to its request"
            )
        self.template = template
        self.size = size
        self._fast: tuple[bytes, bytes] | None = None
        at = [index for index, part in enumerate(parts) if part[1] is not None]
        if len(at) == 1 and not parts[at[0]][2] and parts[at[0]][3] is None:
            prefix = "".join(part[0] for part in parts[: at[0] + 1])
            suffix = "".join(part[0] for part in parts[at[0] + 1 :])
            self._fast = (prefix.encode(), suffix.encode())
        longest = self.render(10**12)
        if len(longest) > MAX_DATAGRAM:
            raise UsageError(f"payload of {len(longest)} bytes exceeds {MAX_DATAGRAM}")

    def render(self, seq: int) -> bytes:
        fast = self._fast
        if fast is not None:
            payload = fast[0] + str(seq).encode() + fast[1]
        else:
            payload = self.template.format(seq=seq).encode()
        if len(payload) < self.size:
            payload += _PAD * (self.size - len(payload))
        return payload

    def render_range(self, start: int, count: int) -> list[bytes]:
        """Payloads of ``start .. start+count-1`` (the hot path of a load test)."""
        fast = self._fast
        if fast is None:
            return [self.render(seq) for seq in range(start, start + count)]
        prefix, suffix = fast
        payloads = [prefix + str(seq).encode() + suffix for seq in range(start, start + count)]
        size = self.size
        if size and len(payloads[0]) < size:
            payloads = [p + _PAD * (size - len(p)) if len(p) < size else p for p in payloads]
        return payloads


class ReplyRule:
    """Which reply answers the request with a given payload and sequence number.

    * ``greeting``: the reply is ``Hello, <payload>!`` (exact);
    * ``echo``: the reply is the payload (exact);
    * any other text is a regular expression in which ``{seq}`` stands for the
      request's number; the reply answers the request whose number it captures
      (``re.search``).
    """

    def __init__(self, expect: str = "greeting") -> None:
        self.name = expect
        self.pattern: re.Pattern[bytes] | None = None
        self._expected: Callable[[bytes], bytes] | None = None
        if expect == "greeting":
            self._expected = greet
        elif expect == "echo":
            self._expected = _same
        else:
            if expect.count("{seq}") != 1:
                raise UsageError(
                    f"--expect {expect!r} must be 'greeting', 'echo' or a regular expression "
                    "containing {seq} exactly once"
                )
            before, after = expect.split("{seq}")
            try:
                self.pattern = re.compile((before + "(?P<seq>[0-9]+)" + after).encode())
            except re.error as exc:
                raise UsageError(f"bad --expect regular expression {expect!r}: {exc}") from None

    @property
    def exact(self) -> bool:
        """True when the reply is known in advance (matching is a dictionary look-up)."""
        return self._expected is not None

    def expected(self, payload: bytes) -> bytes:
        """The one reply that answers ``payload`` (exact rules only)."""
        assert self._expected is not None
        return self._expected(payload)

    def seq_of_untrusted(self, reply: bytes) -> int | None:
        """The number a reply claims to answer (regex rules only), or ``None``."""
        assert self.pattern is not None
        found = self.pattern.search(reply)
        if found is None:
            return None
        return int(found.group("seq"))

    def find_seq_untrusted(self, reply: bytes, template: PayloadTemplate, sent: int) -> int | None:
        """The number ``< sent`` whose request ``reply`` answers, or ``None``.

        The slow path, for replies that matched nothing in flight: tells a
        duplicate or late reply (it answers a number) from a wrong one.
        """
        if self.pattern is not None:
            seq = self.seq_of_untrusted(reply)
            return seq if seq is not None and seq < sent else None
        for seq in _candidate_numbers(reply):
            if seq < sent and self.expected(template.render(seq)) == reply:
                return seq
        return None

    def check(self, template: PayloadTemplate) -> None:
        """Refuse a template whose replies could not be told apart by this rule."""
        if self._expected is None:
            return
        for seq in (0, 7, 42, 99999):
            reply = self.expected(template.render(seq))
            if self.find_seq_untrusted(reply, template, seq + 1) != seq:
                raise UsageError(
                    f"payload template {template.template!r} cannot be matched: the reply to "
                    f"request {seq} does not name it"
                )


def _same(payload: bytes) -> bytes:
    return payload


def _candidate_numbers(reply: bytes) -> Iterator[int]:
    """Every number written in ``reply`` (each run of digits and its sub-runs)."""
    tried = 0
    for run in _DIGITS.finditer(reply):
        digits = run.group()
        for start in range(len(digits)):
            for end in range(len(digits), start, -1):
                if tried >= _MAX_CANDIDATES:
                    return
                tried += 1
                yield int(digits[start:end])
