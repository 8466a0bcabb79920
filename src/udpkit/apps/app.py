"""What an app is: the handler a server runs plus the rule that recognises its reply.

Rule: the two halves of an app travel together.  The server calls
:attr:`App.handler` (or, for an app that takes options such as ``dns
--zone``, the handler :attr:`App.configure` builds from them); clients
(``send``, ``ping``, ``bench``) give :attr:`App.reply` to
:mod:`udpkit.core.matching`, which never imports an app, and build their
requests with :attr:`App.requests` when the app has its own request format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from udpkit.core.framing import FramingName
from udpkit.core.handler import Handler
from udpkit.core.matching import ReplyRule
from udpkit.core.payloads import RequestSource

Clock = Callable[[], float]
"""Seconds on a monotonic clock: handed to an app by whoever runs it (apps read no clock)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppOption:
    """An option of a built-in app: ``udpkit serve APP --NAME VALUE``."""

    name: str
    """The flag without its dashes (``zone`` is ``--zone``)."""
    metavar: str
    help: str


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """A built-in app, registered by :attr:`name` in :mod:`udpkit.apps`."""

    name: str
    """How ``udpkit serve APP`` and ``--expect NAME`` call it."""
    handler: Handler | None
    """``handler(request, peer)``: the reply, ``None`` or an awaitable of either;
    ``None`` for an app whose handler :attr:`configure` builds from its options."""
    reply: ReplyRule
    """Which reply answers a request (exact rules make load tests a dictionary look-up)."""
    options: tuple[AppOption, ...] = ()
    """The app's own ``serve`` options (their values reach :attr:`configure` as text)."""
    configure: Callable[[Mapping[str, str], Clock | None], Handler] | None = None
    """Builds the handler from the options given (and a clock, for apps that limit
    rates); raises :class:`~udpkit.core.errors.UsageError` for bad ones."""
    server_defaults: Mapping[str, object] = field(
        default_factory=lambda: MappingProxyType({}))
    """Server settings this app needs by default (a field of ``ServerConfig``
    -> value): :class:`~udpkit.server.config.ServerConfig` applies them to the
    fields its caller did not give (the library and ``udpkit serve`` alike)."""
    tcp_framings: tuple[FramingName, ...] | None = None
    """The TCP framings the app's messages can travel in (``dns``: ``len16`` only);
    a server configured with another one is refused.  ``None``: any."""
    requests: Callable[[Sequence[str]], RequestSource] | None = None
    """Clients' requests in the app's own format, from lines of text (``--payload``
    or the lines of ``--query-file``); ``None``: a payload template."""
    default_payload: str | None = None
    """The ``--payload`` of ``ping`` and ``bench`` for this app, if not their own."""
