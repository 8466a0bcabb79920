"""Make untrusted bytes safe to put in a log line.

Rule: nothing that came from the network reaches a log unescaped; control
characters (and invalid UTF-8) become visible escapes, so a peer cannot forge
log lines or drive the operator's terminal.
"""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_untrusted(data: bytes | str, *, limit: int = 200) -> str:
    """Return printable text for ``data``, cut to ``limit`` characters.

    Valid UTF-8 stays readable; invalid bytes are shown as ``\\xNN``; control
    and other unprintable characters (C0, C1, DEL, bidi overrides) as ``\\xNN``/``\\uNNNN``.
    """
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
                out.append(f"\\x{code - 0xDC00:02x}")
            else:
                out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    if cut:
        out.append("...")
    return "".join(out)
