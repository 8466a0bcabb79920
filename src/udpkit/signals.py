"""SIGINT, SIGTERM and SIGHUP for a long-running service: the server, the proxy, the
worker supervisor (all through :meth:`udpkit.service.Service.serve`).

SIGHUP reloads a service that has something to reload (``serve dns`` reads its
zone file again, as NSD and Knot do on SIGHUP; :meth:`udpkit.service.Service.reload`);
for any other it is a graceful stop with its summary, like SIGTERM: for a server run
from a terminal it means the terminal went away, and udpkit's own settings are its
command line, so "reload" would only be a restart under another name.  Before,
SIGHUP's default action killed the process with nothing drained.

Rule: the handlers go in before start-up, so a signal that arrives right
after the service said it is bound still stops it gracefully (the default
action would kill it with nothing drained and no summary); the first signal
asks for a graceful stop, every later one for an immediate one.  Where the
event loop cannot watch signals (``add_signal_handler`` is Unix only), a plain
``signal.signal`` handler hands each one to the loop instead.

A bench run or replay follows the same rule for Ctrl-C alone (:func:`ctrl_c`): the
first stops sending and waits for what is in flight, the second cancels the run.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopSignals:
    """``with StopSignals(graceful, immediate):`` around start-up, serving and shutdown.

    ``graceful(name)`` is called for the first SIGINT/SIGTERM/SIGHUP, ``immediate(name)``
    for each one after it (``name``: ``"SIGTERM"``...); ``reload()``, if given, for
    each SIGHUP first, which is then no stop signal if it returns ``True``.
    ``install=False`` leaves the process's signal handling alone (tests, library use);
    ``signals`` narrows which ones are handled.
    """

    def __init__(
        self,
        graceful: Callable[[str], None],
        immediate: Callable[[str], None],
        *,
        reload: Callable[[], bool] | None = None,
        install: bool = True,
        signals: tuple[int, ...] = HANDLED_SIGNALS,
    ) -> None:
        self._graceful = graceful
        self._immediate = immediate
        self._reload = reload
        self._install = install
        self._signals = signals
        self.seen = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if self._install:
            loop = asyncio.get_running_loop()
            for signum in self._signals:
                try:
                    loop.add_signal_handler(signum, self._on_signal, signum)
                except NotImplementedError:  # not Unix: no signal handling in the loop

                    def handler(number: int, frame: FrameType | None) -> None:
                        loop.call_soon_threadsafe(self._on_signal, number)

                    self._previous[signum] = signal.signal(signum, handler)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._install:
            loop = asyncio.get_running_loop()
            for signum in self._signals:
                if signum in self._previous:
                    signal.signal(signum, self._previous.pop(signum))
                else:
                    loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        hang_up = signum == getattr(signal, "SIGHUP", None)
        if hang_up and self._reload is not None and self._reload():
            return
        self.seen += 1
        name = signal.Signals(signum).name
        if self.seen == 1:
            self._graceful(name)
        else:
            self._immediate(name)


@contextmanager
def ctrl_c(stop: Callable[[], None], *, install: bool) -> Iterator[StopSignals]:
    """``with ctrl_c(generator.stop, install=...) as seen:`` around a bench run's sending.

    The first SIGINT calls ``stop()``; the second cancels the current task, which
    leaves the block as :class:`KeyboardInterrupt`.  ``seen.seen`` counts them (a
    run that saw one is interrupted).  Installed only when asked and on the main
    thread (a library caller on another thread keeps its own handling).
    """
    task = asyncio.current_task()

    def cancel(name: str) -> None:
        if task is not None:
            task.cancel()

    signals = StopSignals(
        lambda name: stop(), cancel, signals=(signal.SIGINT,),
        install=install and threading.current_thread() is threading.main_thread(),
    )
    try:
        with signals:
            yield signals
    except asyncio.CancelledError:
        if signals.seen > 1:
            raise KeyboardInterrupt from None
        raise
