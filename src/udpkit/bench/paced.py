"""Open-loop UDP load whose sends a C thread paces (``_fastpath.Pacer``); the glue.

Rule: :mod:`udpkit.core.pacing` decides (which intended times leave together, and
when), :class:`~udpkit.core.load_stats.LoadCore` keeps the accounts, the C
thread keeps time, sends, reads the replies and reports facts (when each batch
actually left; each reply with its kernel arrival time); this module only feeds
the plan ahead and hands those facts to the core, in bulk, every
``feed_ahead / 4`` seconds.

Why one C thread that both sends and reads (rather than the event loop reading):
measured on one core at 50,000 requests/s, Python's ``recvmsg`` per reply plus
the per-reply bookkeeping left the generator behind the schedule; with the
thread reading with ``recvmmsg`` while it waits for its next deadline, Python
makes no system call per datagram.  The thread sleeps in ``poll`` on the socket,
so a reply wakes it to be read and never delays a send (a send is due only at a
deadline, and the read is done by then).  The feed runs ``feed_ahead`` seconds
ahead: requests are registered before they leave, so no reply can beat its own
bookkeeping.  Latency runs from the intended send time to the reply's kernel
arrival (``SO_TIMESTAMPNS``); the wait from arrival to the read is counted apart.
"""

from __future__ import annotations

from array import array

from udpkit._native import PacerType
from udpkit.bench.generator import Generator
from udpkit.bench.udp_generator import enable_timestamps, open_udp_socket
from udpkit.core.handler import Address
from udpkit.core.load_stats import ArrivalSchedule, LoadCore
from udpkit.core.pacing import DEFAULT_POLICY, PacingPolicy, batch_send_times, plan_batches


class PacedUdpGenerator(Generator):
    """Open loop over UDP, sends paced by the C sender, replies read on the event loop."""

    core: LoadCore

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
        super().__init__(server)
        self.core = core
        self.schedule = schedule
        self.policy = policy
        self._sock = open_udp_socket(server)
        self._fd = self._sock.fileno()
        self._kernel_time = enable_timestamps(self._sock)
        self._pacer = pacer_type(
            fd=self._fd, spin_ns=round(policy.spin_for(schedule.rate) * 1e9),
            max_batch=policy.max_batch,
            timer_slack_ns=policy.timer_slack_ns, timerfd=timerfd,
        )
        # intended times and batch sizes handed to the sender, not yet reported sent
        self._plan_times: list[float] = []
        self._plan_sizes: list[int] = []
        self._feeding = True
        self._refused = False

    # -- life cycle --------------------------------------------------------------

    async def _start(self) -> None:
        self._pump(self._loop.time())

    def stop(self) -> None:
        """Stop feeding the sender now (what it holds, at most ``feed_ahead``, still leaves)."""
        self._feeding = False
        super().stop()

    def close(self) -> None:
        super().close()
        self._pacer.close()  # before the socket: the thread sends on its descriptor
        self._sock.close()

    # -- the feed ------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        self._collect()
        if self._refused and self.replies == 0:
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
        self._plan_times.extend(intended)
        self._plan_sizes.extend(sizes)
        self._pacer.submit(send_at.tobytes(), array("i", sizes).tobytes(), payloads)

    def _collect(self) -> None:
        actual = array("q")
        actual.frombytes(self._pacer.collect())
        if actual:
            sizes = self._plan_sizes[:len(actual)]
            total = sum(sizes)
            self.core.record_send_lags(self._plan_times[:total], sizes,
                                       [nanoseconds / 1e9 for nanoseconds in actual])
            del self._plan_sizes[:len(actual)]
            del self._plan_times[:total]
        data, lengths, arrived, read = self._pacer.replies()
        if lengths:
            self._receive(data, lengths, arrived, read)
        if self._pacer.stats()[2]:
            self._refused = True

    def _receive(self, data: bytes, sizes: bytes, arrived: bytes, read: bytes) -> None:
        lengths = array("i")
        lengths.frombytes(sizes)
        arrivals = array("q")
        arrivals.frombytes(arrived)
        reads = array("q")
        reads.frombytes(read)
        view = memoryview(data)
        replies = []
        offset = 0
        for size in lengths:
            replies.append(bytes(view[offset:offset + size]))
            offset += size
        times = [arrival / 1e9 for arrival in arrivals]
        lags = ([(read_at - arrival) // 1000 for read_at, arrival in zip(reads, arrivals,
                                                                           strict=True)]
                if self._kernel_time else None)
        self.core.receive_at(replies, times, lags)
        self.replies += len(lengths)

    def _finished(self, now: float) -> bool:
        if self._done.done():
            return True
        if self._feeding or self._plan_sizes:
            return False
        if self.core.finished(now):
            self._done.set_result(None)
            return True
        return False


