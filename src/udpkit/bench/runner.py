"""Run a load test: resolve, build the core, drive a generator, merge processes.

Rule: :func:`bench` is the one function the CLI calls and a library user can
call too.  Settings are checked before any socket opens (``UsageError``); a
refused port raises :class:`~udpkit.core.errors.RequestRefused`.  The first
SIGINT (when ``handle_signals``) stops sending and waits for the requests in
flight, so Ctrl-C still gives a report; the second one interrupts (:func:`udpkit.signals.ctrl_c`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from udpkit._native import pacer_type
from udpkit.apps import DEFAULT_APP
from udpkit.bench.config import BenchConfig
from udpkit.bench.paced import PacedUdpGenerator
from udpkit.bench.result import BenchResult, decode_histogram, histogram_of, new_histogram
from udpkit.bench.stream import LiveIntervals
from udpkit.bench.tcp_generator import TcpGenerator
from udpkit.bench.udp_generator import UdpGenerator
from udpkit.client.aio import resolve_address
from udpkit.core.errors import RequestRefused, UdpkitError, UsageError
from udpkit.core.handler import TransportName
from udpkit.core.load_stats import ArrivalSchedule, IntervalStats, LoadCore, LoadSummary
from udpkit.core.pacing import merge_counts
from udpkit.signals import ctrl_c

_PROGRESS_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class BenchProgress:
    """A live view of a run, handed to the ``progress`` callback a few times a second."""

    elapsed: float
    """Seconds since the start (warm-up included)."""
    warming_up: bool
    planned: float | None
    """Planned seconds of warm-up plus measurement (``None`` with ``requests`` only)."""
    sent: int
    received: int
    lost: int
    in_flight: int
    rate: float
    """Replies per second over the last update period."""


ProgressCallback = Callable[[BenchProgress], None]
IntervalCallback = Callable[[IntervalStats], None]
"""Called with each interval of the measurement as it closes (``--json-stream``); every
interval of the summary reaches it exactly once, the last ones when the run ends."""


async def run_async(
    config: BenchConfig,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    on_interval: IntervalCallback | None = None,
) -> BenchResult:
    """Run one generator in the running event loop; see :func:`bench`."""
    summary = await _run_core(config.check(), progress=progress, handle_signals=handle_signals,
                              on_interval=on_interval)
    return BenchResult.build(config.check(), summary)


async def _run_core(
    config: BenchConfig, *, progress: ProgressCallback | None, handle_signals: bool,
    on_interval: IntervalCallback | None = None,
) -> LoadSummary:
    kind = socket.SOCK_DGRAM if config.transport == "udp" else socket.SOCK_STREAM
    server = await resolve_address(config.host, config.port, kind)
    loop = asyncio.get_running_loop()
    template, rule = config.payloads()
    start = loop.time()
    wall_offset = time.time() - start
    assert config.interval is not None
    assert config.depth is not None
    core = LoadCore(
        template=template,
        rule=rule,
        timeout=config.timeout,
        start=start,
        warmup=config.warmup,
        duration=config.duration,
        requests=config.requests,
        interval=config.interval,
    )
    schedule = None
    if config.rate is not None:
        schedule = ArrivalSchedule(
            config.rate, start=start, poisson=config.poisson, rng=random.Random(config.seed)
        )
    generator: UdpGenerator | TcpGenerator | PacedUdpGenerator
    pacer = pacer_type() if config.transport == "udp" else None
    paced_by = "" if schedule is None else ("c" if pacer is not None else "python")
    if schedule is not None and pacer is not None:
        generator = PacedUdpGenerator(core, server, schedule=schedule, pacer_type=pacer)
    elif config.transport == "udp":
        generator = UdpGenerator(
            core, server, concurrency=config.concurrency, schedule=schedule,
            batch=config.batch, gso=config.gso,
        )
    else:
        generator = TcpGenerator(
            core, server, connections=config.connections, depth=config.depth, schedule=schedule,
            framing=config.tcp_framing,
        )
    reporter = None
    if progress is not None:
        planned = config.warmup + config.duration if config.duration is not None else None
        reporter = loop.create_task(_report(core, start, planned, progress))
    live = LiveIntervals(core.intervals_closed, core.warmup_end, config.interval, on_interval)
    try:
        with live, ctrl_c(generator.stop, install=handle_signals) as signals:
            await generator.run()
    finally:
        if reporter is not None:
            reporter.cancel()
    summary = replace(core.summary(loop.time()), paced_by=paced_by)
    live.finish(summary.intervals)
    summary = replace(summary, started_at=core.warmup_end + wall_offset)
    return replace(summary, interrupted=True) if signals.seen else summary


async def _report(
    core: LoadCore, start: float, planned: float | None, progress: ProgressCallback
) -> None:
    loop = asyncio.get_running_loop()
    last_time, last_received = start, 0
    while True:
        await asyncio.sleep(_PROGRESS_EVERY)
        now = loop.time()
        rate = (core.received - last_received) / (now - last_time) if now > last_time else 0.0
        last_time, last_received = now, core.received
        progress(
            BenchProgress(
                elapsed=now - start,
                warming_up=now < core.warmup_end,
                planned=planned,
                sent=core.sent,
                received=core.received,
                lost=core.lost,
                in_flight=core.in_flight,
                rate=rate,
            )
        )


def bench(
    host: str = "127.0.0.1",
    port: int = 9999,
    *,
    transport: TransportName = "udp",
    concurrency: int = 64,
    rate: float | None = None,
    poisson: bool = False,
    duration: float | None = None,
    requests: int | None = None,
    warmup: float = 1.0,
    timeout: float = 1.0,
    template: str = "n{seq}",
    size: int = 0,
    expect: str = DEFAULT_APP,
    connections: int = 1,
    depth: int | None = None,
    procs: int = 1,
    batch: int = 64,
    gso: bool = True,
    interval: float | None = None,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    on_interval: IntervalCallback | None = None,
) -> BenchResult:
    """Load-test the request/response service at ``host:port``; return what was measured.

    Closed loop by default (``concurrency`` requests in flight); open loop with
    ``rate`` requests per second (``poisson`` arrivals optionally), latency then
    measured from each request's intended send time.  Runs ``warmup`` seconds,
    then measures for ``duration`` seconds or ``requests`` requests.  Raises
    :class:`~udpkit.core.errors.UsageError` on bad settings or an unknown host
    and :class:`~udpkit.core.errors.RequestRefused` when the port is closed.

    ``on_interval`` is called with each interval as it closes (one process only).

    ``result = udpkit.bench("127.0.0.1", 9999, duration=2)``;
    ``result.throughput``, ``result.latency_ms("p99")``, ``result.lost``.
    """
    config = BenchConfig(
        host=host, port=port, transport=transport, concurrency=concurrency, rate=rate,
        poisson=poisson, duration=duration, requests=requests, warmup=warmup, timeout=timeout,
        template=template, size=size, expect=expect, connections=connections, depth=depth,
        procs=procs, batch=batch, gso=gso, interval=interval, seed=seed,
    ).check()
    return run_config(config, progress=progress, handle_signals=handle_signals,
                      on_interval=on_interval)


def run_config(
    config: BenchConfig,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    on_interval: IntervalCallback | None = None,
) -> BenchResult:
    """Run ``config`` (in ``config.procs`` processes when more than one)."""
    config = config.check()
    if config.procs > 1:
        if on_interval is not None:
            raise UsageError("a live stream of intervals needs one generator process "
                             f"(got --procs {config.procs})")
        return _run_processes(config, handle_signals=handle_signals)
    return asyncio.run(run_async(config, progress=progress, handle_signals=handle_signals,
                                 on_interval=on_interval))


# --------------------------------------------------------------------------- processes


def _worker(config: BenchConfig, conn: multiprocessing.connection.Connection) -> None:
    """One generator process: run, send back the summary and the encoded histogram."""
    try:
        summary = asyncio.run(_run_core(config, progress=None, handle_signals=True))
        encoded: bytes = histogram_of(summary.latency_us).encode()
        conn.send(("ok", summary, encoded.decode("ascii")))
    except RequestRefused as exc:
        conn.send(("error", "RequestRefused", exc.message, exc.address))
    except UdpkitError as exc:
        conn.send(("error", type(exc).__name__, str(exc)))
    except BaseException as exc:  # report, never a traceback from a worker
        conn.send(("error", "RuntimeError", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_processes(config: BenchConfig, *, handle_signals: bool) -> BenchResult:
    context = multiprocessing.get_context("spawn")
    workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
    for index in range(config.procs):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(config.share(index, config.procs), sender), daemon=True
        )
        process.start()
        sender.close()
        workers.append((process, receiver))
    previous = None
    if handle_signals and threading.current_thread() is threading.main_thread():
        def forward(signum: int, frame: object) -> None:
            for process, _ in workers:
                if process.pid is not None:
                    os.kill(process.pid, signal.SIGINT)

        previous = signal.signal(signal.SIGINT, forward)
    outcomes: list[tuple[Any, ...]] = []
    try:
        for process, receiver in workers:
            try:
                outcomes.append(receiver.recv())
            except EOFError:
                outcomes.append(("error", "RuntimeError", "a generator process died"))
            process.join()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for process, _ in workers:
            if process.is_alive():
                process.kill()
    return _merge(config, outcomes)


def _merge(config: BenchConfig, outcomes: list[tuple[Any, ...]]) -> BenchResult:
    errors = [outcome for outcome in outcomes if outcome[0] == "error"]
    if errors:
        kind, message = errors[0][1], errors[0][2]
        if kind == "RequestRefused":
            raise RequestRefused(message, address=errors[0][3])
        if kind == "UsageError":
            raise UsageError(message)
        raise UdpkitError(message)
    histogram = new_histogram()
    summaries: list[LoadSummary] = []
    for _, summary, encoded in outcomes:
        summaries.append(summary)
        histogram.add(decode_histogram(encoded))
    return BenchResult.build(config, merge_summaries(summaries), histogram,
                             processes=len(summaries))


def merge_summaries(summaries: list[LoadSummary]) -> LoadSummary:
    """Add up the accounts of several generators that ran side by side."""
    latency = merge_counts([summary.latency_us for summary in summaries])
    by_start: dict[float, list[IntervalStats]] = {}
    for summary in summaries:
        for item in summary.intervals:
            by_start.setdefault(round(item.start, 9), []).append(item)
    intervals = []
    for start in sorted(by_start):
        items = by_start[start]
        intervals.append(IntervalStats(
            start=start,
            sent=sum(item.sent for item in items),
            received=sum(item.received for item in items),
            lost=sum(item.lost for item in items),
            latency_us=merge_counts([item.latency_us for item in items]),
        ))
    return LoadSummary(
        sent=sum(s.sent for s in summaries),
        received=sum(s.received for s in summaries),
        lost=sum(s.lost for s in summaries),
        duplicates=sum(s.duplicates for s in summaries),
        late=sum(s.late for s in summaries),
        wrong=sum(s.wrong for s in summaries),
        reordered=sum(s.reordered for s in summaries),
        in_flight=sum(s.in_flight for s in summaries),
        duration=max((s.duration for s in summaries), default=0.0),
        latency_us=latency,
        intervals=tuple(intervals),
        send_lag_us=merge_counts([s.send_lag_us for s in summaries]),
        receive_lag_us=merge_counts([s.receive_lag_us for s in summaries]),
        paced_by=summaries[0].paced_by if summaries else "",
        late_sends=sum(s.late_sends for s in summaries),
        max_send_lag=max((s.max_send_lag for s in summaries), default=0.0),
        interrupted=any(s.interrupted for s in summaries),
        started_at=min((s.started_at for s in summaries if s.started_at is not None),
                       default=None),
    )
