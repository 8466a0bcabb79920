"""The registry of built-in apps, and the loader of user apps.

Rule: an app is an :class:`App`, its handler plus the rule that recognises
its reply.  The built-in ones are named once, in :data:`BUILTIN` below, and
every layer above reads this registry: ``serve`` (``APP``), ``send``,
``ping``, ``bench`` and the client (``--expect``, ``matcher=``), the CLI's
choices and help.  :mod:`udpkit.core` never imports an app; it is handed the
reply rule.

Adding a built-in app: one file ``udpkit/apps/<name>.py`` defining
``APP = App(name="<name>", handler=..., reply=...)``, and its name in
:data:`BUILTIN`.

User code is named by an import string ``package.module:attr``; any failure
to load it is one :class:`~udpkit.core.errors.AppLoadError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeAlias

from udpkit.apps.app import App
from udpkit.apps.echo import echo
from udpkit.apps.greeting import greet, greeting
from udpkit.apps.loader import import_handler
from udpkit.core.errors import AppLoadError, UsageError
from udpkit.core.handler import Handler
from udpkit.core.matching import ANY, NumberedReply, Predicate, ReplyRule

BUILTIN: tuple[str, ...] = (
    "greeting",
    "echo",
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



def rule_names(*, numbering: bool = False) -> list[str]:
    """The names ``--expect`` takes; ``numbering``: only rules a load test can use
    (they tell which request a reply answers, see :meth:`ReplyRule.check`)."""
    return [name for name, rule in REPLY_RULES.items()
            if not numbering or rule.exact or rule.numbered]


__all__ = [
    "BUILTIN",
    "BUILTIN_APPS",
    "DEFAULT_APP",
    "REPLY_RULES",
    "App",
    "AppLoadError",
    "ReplyRuleLike",
    "echo",
    "greet",
    "greeting",
    "load_app",
    "reply_rule",
    "rule_names",
]


def load_app(spec: str) -> Handler:
    """Return the handler named by ``spec``: a built-in name or ``module:attr``.

    Raises :class:`AppLoadError` (one line, ``<what> (<hint>)``) and nothing else.
    """
    app = BUILTIN_APPS.get(spec)
    if app is not None:
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
