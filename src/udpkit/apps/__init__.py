"""The registry of built-in apps, and the loader of user apps.

Rule: an app is an :class:`App`, its handler plus the rule that recognises
its reply.  The built-in ones are named once, in :data:`BUILTIN` below, and
every layer above reads this registry: ``serve`` (``APP``), ``send``,
``ping``, ``bench`` and the client (``--expect``, ``matcher=``), the CLI's
choices and help.  :mod:`udpkit.core` never imports an app; it is handed the
reply rule.

Adding a built-in app: one file ``udpkit/apps/<name>.py`` defining
``APP = App(name="<name>", handler=..., reply=...)``, and its name in
:data:`BUILTIN`.  An app with options (``dns --zone FILE``) declares them
(:class:`~udpkit.apps.app.AppOption`) and builds its handler from them
(``App.configure``); ``serve`` offers every built-in app's options.

User code is named by an import string ``package.module:attr``; any failure
to load it is one :class:`~udpkit.core.errors.AppLoadError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeAlias

from udpkit.apps.app import App, AppOption, Clock
from udpkit.apps.echo import echo
from udpkit.apps.greeting import greet, greeting
from udpkit.apps.loader import import_handler
from udpkit.core.errors import AppLoadError, UsageError
from udpkit.core.handler import Handler
from udpkit.core.matching import ANY, NumberedReply, Predicate, ReplyRule
from udpkit.core.payloads import PayloadTemplate, RequestSource

BUILTIN: tuple[str, ...] = (
    "greeting",
    "echo",
    "dns",
)
"""The built-in apps, the default first: each is the module ``udpkit.apps.<name>``."""

DEFAULT_APP = BUILTIN[0]

ReplyRuleLike: TypeAlias = str | ReplyRule | Callable[[bytes, bytes], bool]
"""What :func:`reply_rule` accepts: a name, a ``{seq}`` pattern, a rule or a predicate."""


def _builtin(name: str) -> App:
    app: object = getattr(importlib.import_module(f"udpkit.apps.{name}"), "APP", None)
    if not isinstance(app, App) or app.name != name:
        raise TypeError(f"udpkit.apps.{name} must define APP = App(name={name!r}, ...)")
    return app


BUILTIN_APPS: Mapping[str, App] = MappingProxyType({name: _builtin(name) for name in BUILTIN})
"""Every built-in app by name."""

REPLY_RULES: Mapping[str, ReplyRule] = MappingProxyType(
    {**{name: app.reply for name, app in BUILTIN_APPS.items()}, ANY.name: ANY}
)
"""The reply rules ``--expect`` knows by name: each built-in app's, and ``any``."""


APP_OPTIONS: Mapping[str, tuple[str, AppOption]] = MappingProxyType(
    {option.name: (name, option) for name, app in BUILTIN_APPS.items() for option in app.options}
)
"""Every built-in app's own ``serve`` option, by flag name: (app name, option)."""


def rule_names(*, numbering: bool = False) -> list[str]:
    """The names ``--expect`` takes; ``numbering``: only rules a load test can use
    (they tell which request a reply answers, see :meth:`ReplyRule.check`)."""
    return [name for name, rule in REPLY_RULES.items()
            if not numbering or rule.exact or rule.numbered]


__all__ = [
    "APP_OPTIONS",
    "BUILTIN",
    "BUILTIN_APPS",
    "DEFAULT_APP",
    "REPLY_RULES",
    "App",
    "AppLoadError",
    "AppOption",
    "ReplyRuleLike",
    "default_payload",
    "default_tcp_framing",
    "echo",
    "greet",
    "greeting",
    "load_app",
    "reply_rule",
    "request_source",
    "rule_names",
]


def load_app(spec: str, *, options: Mapping[str, str] | None = None,
             clock: Clock | None = None) -> Handler:
    """Return the handler named by ``spec``: a built-in name or ``module:attr``.

    ``options``: the built-in app's own options (``{"zone": "example.zone"}``);
    ``clock``: a monotonic clock for apps that limit rates.  Raises
    :class:`AppLoadError` (one line, ``<what> (<hint>)``) and nothing else for
    an app that cannot be found; :class:`UsageError` for options it does not take
    or cannot use.
    """
    options = dict(options or {})
    app = BUILTIN_APPS.get(spec)
    takes = {option.name for option in app.options} if app is not None else set()
    for name in options:
        if name not in takes:
            owner = APP_OPTIONS[name][0] if name in APP_OPTIONS else None
            raise UsageError(f"--{name} is an option of "
                             + (f"app {owner!r}" if owner else "no app")
                             + f", not of {spec!r}")
    if app is not None:
        if app.configure is not None:
            return app.configure(options, clock)
        assert app.handler is not None
        return app.handler
    if ":" not in spec:
        known = ", ".join(BUILTIN)
        raise AppLoadError(f"app {spec!r} is not built in", f"built in: {known}; or module:attr")
    return import_handler(spec)


def reply_rule(value: ReplyRuleLike) -> ReplyRule:
    """The rule named by ``value``: a name in :data:`REPLY_RULES`, a regular
    expression containing ``{seq}`` exactly once (:class:`NumberedReply`), a
    :class:`ReplyRule`, or a predicate ``(request, reply) -> bool``.

    Raises :class:`UsageError` for a name that is neither.
    """
    if isinstance(value, ReplyRule):
        return value
    if not isinstance(value, str):
        return Predicate(value)
    rule = REPLY_RULES.get(value)
    if rule is not None:
        return rule
    if value.count("{seq}") != 1:
        known = ", ".join(repr(name) for name in REPLY_RULES)
        raise UsageError(
            f"--expect {value!r} must be {known} or a regular expression containing {{seq}} "
            "exactly once"
        )
    return NumberedReply(value)


def _app_of(expect: str) -> App | None:
    return BUILTIN_APPS.get(expect)


def default_payload(expect: str, fallback: str) -> str:
    """The ``--payload`` of ``ping``/``bench`` with ``--expect expect`` when none is given."""
    app = _app_of(expect)
    return app.default_payload if app is not None and app.default_payload else fallback


def default_tcp_framing(expect: str) -> str:
    """The TCP framing a client uses with ``--expect expect`` when none is given: the
    app's server default (``dns``: ``len16``), else ``line``."""
    app = _app_of(expect)
    framing = app.server_defaults.get("tcp_framing") if app is not None else None
    return framing if isinstance(framing, str) else "line"


def request_source(expect: str, template: str, *, size: int = 0,
                   lines: Sequence[str] | None = None) -> RequestSource:
    """The requests a client sends to an ``expect`` app: the app's own format
    (``--expect dns``: DNS queries, from ``lines`` of a query file or the
    ``template`` line), else the payload ``template`` padded to ``size``."""
    app = _app_of(expect)
    if app is not None and app.requests is not None:
        if size:
            raise UsageError(f"--size does not apply to {expect} requests")
        return app.requests(lines if lines is not None else [template])
    if lines is not None:
        raise UsageError("--query-file needs an app with a query format (--expect dns)")
    return PayloadTemplate(template, size=size)
