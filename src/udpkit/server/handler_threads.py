"""Sync handlers that may block, run in a bounded pool of threads (``--handler-threads N``).

Rule: the event loop never waits for a handler.  A sync handler that sleeps, reads a
file or asks a database blocks every client of the loop (:mod:`udpkit.server.watchdog`
says so in the log); wrapped here it becomes an async handler whose work runs on one of
``threads`` threads, so the loop goes on serving while up to ``threads`` calls block.
Calls beyond that wait in the pool's queue, bounded like every async request by the
server's per-request timeout and in-flight caps.  The handler must then be thread-safe.
Costs a thread hop per request: for handlers that never block, leave it off (the C fast
paths serve only sync handlers on the loop).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from udpkit.core.errors import UsageError
from udpkit.core.handler import Peer, Reply, SyncHandler


class ThreadedHandler:
    """``handler`` called on a pool of ``threads`` threads; awaitable from the loop."""

    def __init__(self, handler: SyncHandler, *, threads: int) -> None:
        if threads < 1:
            raise UsageError(f"handler threads must be at least 1 (got {threads})")
        self.handler = handler
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="udpkit-handler")

    async def __call__(self, request: bytes, peer: Peer) -> Reply:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.handler, request, peer)

    def close(self) -> None:
        """Drop queued calls; calls running now finish on their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        name = getattr(self.handler, "__qualname__", repr(self.handler))
        return f"ThreadedHandler({name}, threads={self.threads})"
