"""Built-in applications and the loader for user handlers.

Rule: an app is a plain handler (see :mod:`udpkit.core.handler`) plus, for the
client side, a way to tell whether a reply answers a request.  User code is
named by an import string ``package.module:attr``.
"""

from __future__ import annotations

import importlib

from udpkit.apps.echo import echo
from udpkit.apps.greeting import greet, greeting
from udpkit.core.errors import UsageError
from udpkit.core.handler import Handler

BUILTIN_APPS: dict[str, Handler] = {"greeting": greeting, "echo": echo}

__all__ = ["BUILTIN_APPS", "echo", "greet", "greeting", "load_app"]


def load_app(spec: str) -> Handler:
    """Return the handler named by ``spec``: a built-in name or ``module:attr``.

    Raises :class:`UsageError` with a message fit for a command line.
    """
    if spec in BUILTIN_APPS:
        return BUILTIN_APPS[spec]
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        known = ", ".join(sorted(BUILTIN_APPS))
        raise UsageError(f"app {spec!r} is not built in ({known}) nor of the form 'module:attr'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise UsageError(f"{spec!r} is not callable")
    handler: Handler = target
    return handler
