"""Which event loop runs the server: asyncio's own, or uvloop when installed.

Rule: uvloop is an optional speed-up (``pip install udpkit[fast]``), never a
requirement; ``auto`` takes it when it imports, and the choice is announced
at start-up so a benchmark or a bug report says which loop it ran on.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from udpkit.core.errors import UsageError
from udpkit.server.logs import server_log

LoopName = Literal["auto", "asyncio", "uvloop"]
T = TypeVar("T")


def loop_factory(name: LoopName) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """``(what was chosen, a factory of new loops)``; raise :class:`UsageError` if unavailable."""
    if name in ("auto", "uvloop"):
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if name == "uvloop":
                raise UsageError(
                    "uvloop is not installed (pip install 'udpkit[fast]')"
                ) from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return "uvloop", factory
    return "asyncio", asyncio.new_event_loop


def run_with_loop(main: Coroutine[Any, Any, T], name: LoopName = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``name`` asks for, announced in the log."""
    try:
        chosen, factory = loop_factory(name)
    except UsageError:
        main.close()
        raise
    server_log.info("Event loop: %s", chosen)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
