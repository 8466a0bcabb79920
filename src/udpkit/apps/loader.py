"""Loading a user's app from an import string ``package.module:attr``.

Rule: whatever goes wrong (missing module, syntax error or exception while
importing, missing attribute, not callable) comes out as one
:class:`~udpkit.core.errors.AppLoadError` whose text is one line, ``<what>
(<hint>)``; nothing the user's module does at import escapes as a traceback.
"""

from __future__ import annotations

import importlib
import traceback

from udpkit.core.errors import AppLoadError
from udpkit.core.handler import Handler

HANDLER_SHAPE = "a handler is a function handler(request, peer) returning bytes or None"


def import_handler(spec: str) -> Handler:
    """Import ``module:attr`` (``attr`` may be dotted) and return the callable it names."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise AppLoadError(
            f"app {spec!r} is not of the form 'module:attr'", "for example myapp:handler"
        )
    target: object = _import(module_name)
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except Exception:  # AttributeError, or whatever a module __getattr__ raises
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attr_path!r}",
                "check the name after ':'",
            ) from None
    if not callable(target):
        raise AppLoadError(
            f"{spec!r} is not callable: its type is {type(target).__name__}", HANDLER_SHAPE
        )
    handler: Handler = target
    return handler


def _import(module_name: str) -> object:
    what = f"cannot import module {module_name!r}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            hint = "not on the import path: check the name, or give its directory with --app-dir"
        else:
            hint = f"it imports {exc.name!r}, which is not installed"
        raise AppLoadError(f"{what}: {exc}", hint) from None
    except SyntaxError as exc:
        where = f"{exc.filename} line {exc.lineno}" if exc.filename else module_name
        raise AppLoadError(
            f"{what}: syntax error in {where}: {exc.msg}", "fix the module's code"
        ) from None
    except (Exception, SystemExit) as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename} line {frames[-1].lineno}" if frames else ""
        raise AppLoadError(
            f"{what}: it raised {type(exc).__name__}: {exc}{where}",
            f"python -c 'import {module_name}' in its directory shows the traceback",
        ) from None
