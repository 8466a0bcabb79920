"""Open-loop UDP load whose sends a C thread paces (``_fastpath.Pacer``); the glue.

Rule: :mod:`udpkit.core.pacing` decides (which intended times leave together, and
when), :class:`~udpkit.core.load_stats.LoadCore` keeps the accounts, the C
sender keeps time and reports when each batch actually left; this module only
feeds the plan ahead, reads the replies and hands facts to the core.

Why a C thread that sends while the event loop receives (rather than one C loop
doing both): the sender then never waits behind a reply being handled, nor the
replies behind a sleeping sender; the thread never takes the GIL, so the
Python side (rendering payloads, matching replies) runs beside it on the other
core, or between its sleeps on one core.  The feed runs ``feed_ahead`` seconds
ahead of the clock: requests are registered before they leave, so no reply can
beat its own bookkeeping.

Replies are read with ``recvmsg`` and the kernel's arrival time
(``SO_TIMESTAMPNS``, where the kernel gives it): latency runs from the intended
send time to the *arrival*, and the wait from arrival to the read (the
generator's receive-side error) is counted apart.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import deque

from udpkit._native import PacerType
from udpkit.bench.udp_generator import ReplyReader, open_udp_socket
from udpkit.core.errors import RequestRefused
from udpkit.core.handler import Address, format_address
from udpkit.core.load_stats import ArrivalSchedule, LoadCore
from udpkit.core.pacing import DEFAULT_POLICY, PacingPolicy, batch_send_times, plan_batches
from udpkit.timer import DeadlineTimer

_READ_LIMIT = 1024


class PacedUdpGenerator:
    """Open loop over UDP, sends paced by the C sender, replies read on the event loop."""

    def __init__(
        self,
        core: LoadCore,
        server: Address,
        *,
        schedule: ArrivalSchedule,
        pacer_type: PacerType,
        policy: PacingPolicy = DEFAULT_POLICY,
        timerfd: bool = False,
    ) -> None:
        self.core = core
        self.server = server
        self.schedule = schedule
        self.policy = policy
        self._loop = asyncio.get_running_loop()
        self._sock = open_udp_socket(server)
        self._fd = self._sock.fileno()
        self._reader = ReplyReader(self._sock, core)
        self._pacer = pacer_type(
            fd=self._fd, spin_ns=round(policy.spin * 1e9), max_batch=policy.max_batch,
            timer_slack_ns=policy.timer_slack_ns, timerfd=timerfd,
        )
        self._batches: deque[list[float]] = deque()
        self._feeding = True
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.replies = 0

    # -- life cycle --------------------------------------------------------------

    async def run(self) -> None:
        """Send the schedule until the core stops sending, then wait for the replies."""
        self._loop.add_reader(self._fd, self._on_readable)
        try:
            self._tick(self._loop.time())
            await self._done
        finally:
            self.close()

    def stop(self) -> None:
        """Stop feeding the sender now (what it holds, at most ``feed_ahead``, still leaves)."""
        now = self._loop.time()
        self.core.stop(now)
        self._feeding = False
        self._tick(now)

    def close(self) -> None:
        self._timer.cancel()
        self._pacer.close()  # before the socket: the thread sends on its descriptor
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._fd)
            self._sock.close()

    # -- the feed ------------------------------------------------------------------

    def _on_timer(self, when: float) -> None:
        self._tick(max(when, self._loop.time()))

    def _tick(self, now: float) -> None:
        self._collect()
        if self._reader.refused and self.replies == 0:
            self._fail_refused()
            return
        core = self.core
        core.expire(now)
        if self._feeding:
            self._feed(now)
        if self._finished(now):
            return
        self._timer.arm(now + self.policy.feed_ahead / 4)

    def _feed(self, now: float) -> None:
        core = self.core
        if not core.sending(now):
            self._feeding = False
            return
        until = min(now + self.policy.feed_ahead, core.stop_at)
        intended = self.schedule.due(until)
        if not intended:
            return
        split = 0
        while split < len(intended) and intended[split] < core.warmup_end:
            split += 1
        for part in (intended[:split], intended[split:]):
            if not part:
                continue
            payloads = core.issue_planned(part, now)
            if len(payloads) < len(part):
                part = part[:len(payloads)]
                self._feeding = False
            if not payloads:
                break
            self._submit(part, payloads)

    def _submit(self, intended: list[float], payloads: list[bytes]) -> None:
        sizes = plan_batches(intended, self.policy)
        send_at = array("q", (round(when * 1e9) for when in batch_send_times(intended, sizes)))
        index = 0
        for size in sizes:
            self._batches.append(intended[index:index + size])
            index += size
        self._pacer.submit(send_at.tobytes(), array("i", sizes).tobytes(), payloads)

    def _collect(self) -> None:
        actual = array("q")
        actual.frombytes(self._pacer.collect())
        record = self.core.record_send_lag
        batches = self._batches
        for nanoseconds in actual:
            record(batches.popleft(), nanoseconds / 1e9)
        if self._pacer.stats()[2]:
            self._reader.refused = True

    def _finished(self, now: float) -> bool:
        if self._done.done():
            return True
        if self._feeding or self._batches:
            return False
        if self.core.finished(now):
            self._done.set_result(None)
            return True
        return False

    def _fail_refused(self) -> None:
        if not self._done.done():
            self._done.set_exception(
                RequestRefused("port closed (ICMP port unreachable) over udp",
                               address=format_address(self.server))
            )

    # -- input ---------------------------------------------------------------------

    def _on_readable(self) -> None:
        self.replies += self._reader.read(_READ_LIMIT)
        if self._reader.refused and self.replies == 0:
            self._fail_refused()
            return
        self._finished(self._loop.time())
