"""The ``echo`` app: RFC 862, the request comes back unchanged.

https://www.rfc-editor.org/rfc/rfc862
"""

from __future__ import annotations

from udpkit.core.handler import Peer


def echo(request: bytes, peer: Peer) -> bytes:
    return request
