"""Noticing a stalled event loop, and saying what stalled it.

Rule: one loop serves every client, so a sync handler that blocks (``time.sleep``, a
blocking database call) stops UDP and TCP for everyone until it returns.  The loop
cannot see that from inside, so a thread watches a heartbeat the loop stamps every
``interval``; when the stamp is older than ``threshold`` the thread takes the loop
thread's stack (``sys._current_frames``) and logs, once per stall, how long it has lasted
and the innermost frame outside udpkit and asyncio: the handler line that blocks.  When
the loop runs again, one line says how long the stall was.  Stalls are counted.  The way
out is documented in the README: ``--handler-threads N`` or an async handler.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from types import FrameType

from udpkit.server.logs import server_log

_OWN = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # udpkit
    os.path.dirname(os.path.abspath(asyncio.__file__)),
)


def blocking_frame(frame: FrameType | None) -> str:
    """``file:line in function`` of the innermost frame that is neither udpkit's nor
    asyncio's (the handler's own code), or of the innermost frame at all."""
    stack = traceback.extract_stack(frame) if frame is not None else []
    for entry in reversed(stack):
        if not entry.filename.startswith(_OWN):
            return f"{entry.filename}:{entry.lineno} in {entry.name}"
    if stack:
        last = stack[-1]
        return f"{last.filename}:{last.lineno} in {last.name}"
    return "unknown code"


class LoopWatchdog:
    """Watch the running loop from a thread; log and count stalls over ``threshold`` s."""

    def __init__(self, *, threshold: float = 0.5, interval: float = 0.1) -> None:
        self.threshold = threshold
        self.interval = interval
        self.stalls = 0
        """Stalls seen (each logged once when found, once when over)."""
        self.longest = 0.0
        self._beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled_since: float | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="udpkit-watchdog",
                                        daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        now = time.monotonic()
        since = self._stalled_since
        if since is not None:
            self._stalled_since = None
            lasted = now - since + self.threshold
            self.longest = max(self.longest, lasted)
            server_log.warning("Event loop ran again after a stall of %.2f s", lasted)
        self._beat = now
        assert self._loop is not None
        self._handle = self._loop.call_later(self.interval, self._tick)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            late = time.monotonic() - self._beat
            if late < self.threshold or self._stalled_since is not None:
                continue
            self._stalled_since = self._beat + self.threshold
            self.stalls += 1
            frame = sys._current_frames().get(self._loop_thread)
            server_log.warning(
                "Event loop stalled for %.2f s so far, every client waits: %s blocks "
                "(a sync handler? see --handler-threads)", late, blocking_frame(frame),
            )

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
