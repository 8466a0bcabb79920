"""What every load generator's glue shares (UDP, TCP, C-paced, replay).

Rule: a generator drives one sans-IO core with one :class:`DeadlineTimer`; its
run sends until the core stops sending, waits for the requests in flight, and
closes its sockets whatever happened; ``stop()`` (the first Ctrl-C) tells the
core and lets the run finish.  Over UDP, an ICMP port unreachable before any
reply fails the run with :class:`RequestRefused` (a reply proves the port open,
so a later ICMP error only loses requests).  Each subclass says how it starts
and what one ``_pump(now)`` does.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from udpkit.core.errors import RequestRefused
from udpkit.core.handler import Address, format_address
from udpkit.timer import DeadlineTimer


class _Core(Protocol):
    def stop(self, now: float) -> None: ...


class Generator:
    """The life cycle; subclasses give :meth:`_start`, :meth:`_pump` and close more."""

    core: _Core

    def __init__(self, server: Address) -> None:
        self.server = server
        self._loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.replies = 0

    async def run(self) -> None:
        """Send until the core stops sending, then wait for the requests in flight."""
        try:
            await self._start()
            await self._done
        finally:
            self.close()

    def stop(self) -> None:
        """Stop sending now; the run ends when the requests in flight are resolved."""
        now = self._loop.time()
        self.core.stop(now)
        self._pump(now)

    def close(self) -> None:
        self._timer.cancel()

    async def _start(self) -> None:
        raise NotImplementedError

    def _pump(self, now: float) -> None:
        raise NotImplementedError

    def _on_timer(self, when: float) -> None:
        self._pump(max(when, self._loop.time()))  # the loop may fire a hair early

    def _fail_refused(self) -> None:
        """ICMP port unreachable before any reply: the run fails (UDP only)."""
        if not self._done.done():
            self._done.set_exception(
                RequestRefused("port closed (ICMP port unreachable) over udp",
                               address=format_address(self.server))
            )
