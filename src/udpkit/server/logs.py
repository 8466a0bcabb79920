"""Server log lines: start-up, access, errors, the shutdown summary.

Rule: every byte that came from the network goes through
:func:`~udpkit.core.escaping.escape_untrusted` before it is logged, and
per-request lines are only formatted when the access log is on.
"""

from __future__ import annotations

import logging
import sys

from udpkit.core.escaping import escape_untrusted
from udpkit.core.handler import Peer

server_log = logging.getLogger("udpkit.server")
access_log = logging.getLogger("udpkit.access")


def log_access(peer: Peer, request: bytes) -> None:
    access_log.info(
        "Received from %s over %s (%d bytes): %s",
        peer,
        peer.transport,
        len(request),
        escape_untrusted(request),
    )


def configure(level: int = logging.INFO) -> None:
    """Send udpkit's logs to stderr, one plain line each (used by the CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("udpkit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
