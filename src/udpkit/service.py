"""The life cycle every long-running udpkit service shares: the server, the
worker supervisor and the impairment proxy.

Rule: in the manner of uvicorn's ``Server``, a service is three steps,
:meth:`Service.startup`, :meth:`Service.main_loop` and :meth:`Service.shutdown`;
this module alone orders them.  :meth:`Service.serve` runs them inside
:class:`~udpkit.signals.StopSignals` (handlers in before start-up); the first
SIGINT/SIGTERM asks for a graceful stop (:meth:`Service.request_exit`), every
later one for an immediate one (:meth:`Service.force_exit`), and each wait of a
shutdown that is bounded by a graceful timeout (:meth:`Service.wait_or_force`)
gives way to it.  ``async with service`` is start-up ... shutdown, with no
signal handling (tests, library use).  A subclass says what each step does and
what it logs, never in which order they run.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Self

from udpkit.signals import StopSignals


class Service(abc.ABC):
    """A service that starts, runs until asked to stop, and shuts down."""

    def __init__(self) -> None:
        self.exit_code = 0
        """What :meth:`serve` returns: 0, or 1 when the service gave up on its own."""
        self._should_exit = asyncio.Event()
        self._force_exit = asyncio.Event()

    # -- the three steps (subclasses) -------------------------------------------

    @abc.abstractmethod
    async def startup(self) -> None:
        """Bind and start; on failure release whatever was opened, then raise."""

    async def main_loop(self) -> None:
        """Run until :meth:`request_exit` (or :meth:`force_exit`) is called."""
        await self._should_exit.wait()

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop taking work, finish what is in flight (bounded), close everything."""

    def stopped(self) -> None:
        """Called once :meth:`serve` has shut down (to log a summary); does nothing here."""
        return None

    @abc.abstractmethod
    def signal_received(self, signal_name: str, *, again: bool) -> None:
        """Log what a stop signal does (``again``: not the first one)."""

    @property
    def reloadable(self) -> bool:
        """Whether :meth:`reload` has something to reload; if not, SIGHUP stops the
        service as SIGTERM does."""
        return False

    def reload(self) -> None:
        """What SIGHUP does to a :attr:`reloadable` service (``serve dns``: read the
        zone file again); logs what it did, keeps serving whatever happens."""
        return None

    # -- stopping -----------------------------------------------------------------

    def request_exit(self) -> None:
        """Ask for a graceful stop (what the first SIGINT/SIGTERM does)."""
        self._should_exit.set()

    def force_exit(self) -> None:
        """Stop waiting for in-flight work (what a second signal does)."""
        self.request_exit()
        self._force_exit.set()

    @property
    def exit_requested(self) -> bool:
        """Whether :meth:`request_exit` (or :meth:`force_exit`) was called."""
        return self._should_exit.is_set()

    @property
    def forced(self) -> bool:
        """Whether :meth:`force_exit` was called."""
        return self._force_exit.is_set()

    async def wait_or_force(self, work: Awaitable[object], timeout: float) -> None:
        """Wait for ``work`` at most ``timeout`` seconds, and no longer than until
        :meth:`force_exit`; ``work`` is cancelled if it is not done by then."""
        task = asyncio.ensure_future(work)
        force = asyncio.ensure_future(self._force_exit.wait())
        try:
            await asyncio.wait([task, force], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, force):
                pending.cancel()

    # -- running --------------------------------------------------------------------

    async def serve(self, *, install_signals: bool = True) -> int:
        """Start, serve until asked to stop, shut down; the exit code.

        Signal handlers go in before start-up, so a SIGTERM that arrives
        right after the service said it is bound still stops it gracefully.
        """
        with StopSignals(self._first_signal, self._later_signal, reload=self._hang_up,
                         install=install_signals):
            await self.startup()
            try:
                await self.main_loop()
            finally:
                await self.shutdown()
                self.stopped()
        return self.exit_code

    def _hang_up(self) -> bool:
        if not self.reloadable or self.exit_requested:
            return False
        self.reload()
        return True

    def _first_signal(self, signal_name: str) -> None:
        self.signal_received(signal_name, again=False)
        self.request_exit()

    def _later_signal(self, signal_name: str) -> None:
        self.signal_received(signal_name, again=True)
        self.force_exit()

    async def __aenter__(self) -> Self:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
