"""Host and port as people write them on a command line.

Rule: one parser for every ``HOST:PORT`` flag, with IPv6 in brackets, so all
commands accept and reject the same spellings with the same messages.
"""

from __future__ import annotations

from udpkit.core.errors import UsageError


def is_ascii_decimal(text: str) -> bool:
    """Whether ``text`` is digits 0-9 only.  ``str.isdigit`` alone also takes ``²`` (which
    ``int`` then refuses) and other scripts' digits (which ``int`` quietly accepts)."""
    return text.isascii() and text.isdigit()


def parse_host_port(
    text: str,
    *,
    allow_zero: bool = True,
    default_host: str = "127.0.0.1",
    default_port: int | None = None,
) -> tuple[str, int]:
    """``127.0.0.1:9999``, ``[::1]:9999``, ``localhost:9999`` or ``:9999`` (default host);
    a bare ``host`` or ``[::1]`` when ``default_port`` is given."""
    value = text.strip()
    if default_port is not None:
        if value.startswith("[") and value.endswith("]"):
            return (value[1:-1], default_port)
        if value and ":" not in value:
            return (value, default_port)
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise UsageError(f"{text!r} is not [IPV6]:PORT")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise UsageError(f"{text!r} is not HOST:PORT (write IPv6 as [::1]:9999)")
    low = 0 if allow_zero else 1
    if not is_ascii_decimal(port) or not low <= int(port) <= 65535:
        raise UsageError(f"{text!r}: port must be a number in {low}..65535")
    return (host or default_host, int(port))
