"""The ``echo`` app: RFC 862, the request comes back unchanged.

Rule: the reply depends on the request alone, so the handler is its own reply
rule (the peer is optional).

https://www.rfc-editor.org/rfc/rfc862
"""

from __future__ import annotations

from udpkit.apps.app import App
from udpkit.core.handler import Peer
from udpkit.core.matching import ExpectReply


def echo(request: bytes, peer: Peer | None = None) -> bytes:
    """The ``echo`` handler, and the reply a client expects to ``request``."""
    return request


APP = App(name="echo", handler=echo, reply=ExpectReply(echo))
