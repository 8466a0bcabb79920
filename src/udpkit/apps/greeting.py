"""The tutorial's greeting service: ``Michael`` gets ``Hello, Michael!``.

Rule: byte for byte the tutorial's reply; a trailing ``\\n`` or ``\\r\\n`` moves
after the ``!`` so line-oriented tools (``nc -u``) see clean lines.  Bytes that
are not UTF-8 are greeted as they are.  Clients recognise the reply with
:func:`greet`; the handler writes it out for speed, and tests hold the two equal.
"""

from __future__ import annotations

from udpkit.apps.app import App
from udpkit.core.handler import Peer
from udpkit.core.matching import ExpectReply


def greet(name: bytes) -> bytes:
    """The reply to ``name``: ``Hello, <name>!`` with any line end kept last."""
    if name.endswith(b"\n"):
        if name.endswith(b"\r\n"):
            return b"Hello, " + name[:-2] + b"!\r\n"
        return b"Hello, " + name[:-1] + b"!\n"
    return b"Hello, " + name + b"!"


def greeting(request: bytes, peer: Peer) -> bytes:
    """The ``greeting`` app (the default): greet whoever sent ``request``.

    :func:`greet` written out: this runs once per request, and one Python call
    less is measurable at 300,000 requests a second."""
    if request.endswith(b"\n"):
        return greet(request)
    return b"Hello, %b!" % request


APP = App(name="greeting", handler=greeting, reply=ExpectReply(greet))
