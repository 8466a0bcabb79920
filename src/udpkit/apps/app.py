"""What an app is: the handler a server runs plus the rule that recognises its reply.

Rule: the two halves of an app travel together.  The server calls
:attr:`App.handler`; clients (``send``, ``ping``, ``bench``) give
:attr:`App.reply` to :mod:`udpkit.core.matching`, which never imports an app.
"""

from __future__ import annotations

from dataclasses import dataclass

from udpkit.core.handler import Handler
from udpkit.core.matching import ReplyRule


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """A built-in app, registered by :attr:`name` in :mod:`udpkit.apps`."""

    name: str
    """How ``udpkit serve APP`` and ``--expect NAME`` call it."""
    handler: Handler
    """``handler(request, peer)``: the reply, ``None`` or an awaitable of either."""
    reply: ReplyRule
    """Which reply answers a request (exact rules make load tests a dictionary look-up)."""
