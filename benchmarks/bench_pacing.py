"""How precisely each way of waiting keeps an open-loop schedule: the pacing options side by side.

Rule: a measurement, never a test.  Each option drives the C paced sender
(``_fastpath.Pacer``) through the same constant-rate schedule for a short run,
sending to a loopback sink nobody reads (the sender's work is the same; no
server's noise), and reports the send lag (actual - intended) p50/p99/p99.9/max
and the process CPU it cost.  The last rows are the event loop's own timers
(what ``udpkit bench --rate`` used before, and still uses without the C
extension), measured the same way.

    .venv/bin/python benchmarks/bench_pacing.py [--seconds 1] [--rates 1000,10000,100000]
    taskset -c 1 .venv/bin/python benchmarks/bench_pacing.py   # one core, as the targets say

Options: the kernel's default 50 us timer slack vs 1 ns (PR_SET_TIMERSLACK),
ppoll's timeout vs a timerfd (the thread waits in poll() on its socket, so a
reply wakes it to be read), no spin vs a spin of 10/50 us before each deadline
(at most a quarter of the gap between sends by default), and a pure spin.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import contextlib

from udpkit import _native
from udpkit.core.load_stats import percentile_of_counts
from udpkit.core.pacing import (
    LagAccount,
    PacingPolicy,
    batch_send_times,
    plan_batches,
)


@dataclass(frozen=True)
class Option:
    name: str
    policy: PacingPolicy | None  # None: the event loop's timers
    timerfd: bool = False


OPTIONS = [
    Option("ppoll, default slack (50 us), no spin",
           PacingPolicy(spin=0.0, timer_slack_ns=50_000)),
    Option("ppoll, slack 1 ns, no spin", PacingPolicy(spin=0.0)),
    Option("timerfd, slack 1 ns, no spin", PacingPolicy(spin=0.0), timerfd=True),
    Option("ppoll, slack 1 ns, spin 10 us", PacingPolicy(spin=10e-6, spin_share=1.0)),
    Option("ppoll, slack 1 ns, spin 50 us at any rate",
           PacingPolicy(spin_share=1.0)),
    Option("ppoll, slack 1 ns, spin min(50 us, gap/4) (default)", PacingPolicy()),
    Option("timerfd, slack 1 ns, spin min(50 us, gap/4)", PacingPolicy(), timerfd=True),
    Option("pure spin (never sleeps)", PacingPolicy(spin=10.0, spin_share=1.0)),
    Option("asyncio event loop timers (pure path)", None),
]


def sink() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    sender.connect(receiver.getsockname())
    return sender, receiver


def run_c(option: Option, rate: float, seconds: float) -> tuple[LagAccount, float]:
    assert option.policy is not None
    pacer_type = _native.pacer_type()
    if pacer_type is None:
        raise SystemExit(f"the C extension is needed: {_native.unavailable()}")
    policy = option.policy
    sender, receiver = sink()
    pacer = pacer_type(fd=sender.fileno(),
                       spin_ns=min(round(policy.spin_for(rate) * 1e9), 10**10),
                       max_batch=policy.max_batch, timer_slack_ns=policy.timer_slack_ns,
                       timerfd=option.timerfd)
    account = LagAccount()
    batches: list[list[float]] = []
    start = time.monotonic() + 0.02
    count = int(rate * seconds)
    step = 1.0 / rate
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        fed = done = cursor = 0
        actual = array("q")
        while done < count:
            now = time.monotonic()
            # feed ahead, as the bench does (policy.feed_ahead)
            until = min(count, int((now + policy.feed_ahead - start) * rate) + 1)
            if until > fed:
                intended = [start + i * step for i in range(fed, until)]
                sizes = plan_batches(intended, policy)
                leaves = batch_send_times(intended, sizes)
                index = 0
                for size in sizes:
                    batches.append(intended[index:index + size])
                    index += size
                pacer.submit(array("q", (round(t * 1e9) for t in leaves)).tobytes(),
                             array("i", sizes).tobytes(), [b"x" * 16] * len(intended))
                fed = until
            actual.frombytes(pacer.collect())
            for nanoseconds in actual:
                group = batches[cursor]
                cursor += 1
                account.record(group, nanoseconds / 1e9)
                done += len(group)
            actual = array("q")
            time.sleep(policy.feed_ahead / 4)
    finally:
        pacer.close()
        sender.close()
        receiver.close()
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    return account, cpu


def run_loop(rate: float, seconds: float) -> tuple[LagAccount, float]:
    """The event loop's timers: what the pure path does (call_at, then send)."""
    async def main() -> LagAccount:
        loop = asyncio.get_running_loop()
        sender, receiver = sink()
        account = LagAccount()
        start = loop.time() + 0.02
        count = int(rate * seconds)
        step = 1.0 / rate
        done = asyncio.Event()
        sent = 0

        def fire() -> None:
            nonlocal sent
            now = loop.time()
            due = []
            while sent < count and start + sent * step <= now:
                due.append(start + sent * step)
                sent += 1
            for _ in due:
                with contextlib.suppress(BlockingIOError):
                    sender.send(b"x" * 16)
            if due:
                account.record(due, loop.time())
            if sent >= count:
                done.set()
            else:
                loop.call_at(start + sent * step, fire)

        loop.call_at(start, fire)
        await done.wait()
        sender.close()
        receiver.close()
        return account

    cpu0, wall0 = time.process_time(), time.monotonic()
    account = asyncio.run(main())
    return account, (time.process_time() - cpu0) / (time.monotonic() - wall0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rates", default="1000,10000,100000")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    print(f"send lag (us) per pacing option, {args.seconds:g} s per cell; CPU = process "
          "CPU / wall time")
    print("| option | rate/s | lag p50 | p99 | p99.9 | max | CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for option in OPTIONS:
        for rate in rates:
            if option.policy is None:
                account, cpu = run_loop(rate, args.seconds)
            else:
                account, cpu = run_c(option, rate, args.seconds)
            counts = account.counts
            p50, p99, p999 = (percentile_of_counts(counts, p) for p in (50, 99, 99.9))
            print(f"| {option.name} | {rate:,.0f} | {p50:,} | {p99:,} | {p999:,} | "
                  f"{max(counts) if counts else 0:,} | {cpu:.0%} |", flush=True)


if __name__ == "__main__":
    main()
