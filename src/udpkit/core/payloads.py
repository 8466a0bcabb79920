"""Numbered request payloads of a load test.

Rule: a load test tells loss, duplication, reordering, lateness and wrong
replies apart only if every reply names its request.  So every payload carries
its sequence number (``{seq}`` in the template, required); the
:class:`~udpkit.core.matching.ReplyRule` finds the number again in a reply.
Everything here is pure: no sockets, no clock.
"""

from __future__ import annotations

import string
from typing import Protocol

from udpkit.core.errors import UsageError

MAX_DATAGRAM = 65507
"""The largest UDP payload over IPv4."""

DEFAULT_TEMPLATE = "n{seq}"
"""The C reference load generator's payload: ``n<seq>``."""

_PAD = b"x"


class RequestSource(Protocol):
    """What a load test and ``ping`` send: request ``seq`` as bytes.

    :class:`PayloadTemplate` for most apps; an app with its own request
    format (DNS queries) brings its own (:attr:`udpkit.apps.App.requests`).
    """

    template: str
    """What the requests are made of, as the user gave it (for messages)."""

    def render(self, seq: int) -> bytes: ...

    def render_range(self, start: int, count: int) -> list[bytes]: ...


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
