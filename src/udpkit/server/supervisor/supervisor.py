"""The supervisor of ``serve --workers``: starts N workers, restarts them, adds up.

Rule: the supervisor serves no requests.  It holds the port (see
:mod:`~udpkit.server.supervisor.port_lock`), restarts a worker that dies (with
backoff, a bounded number of times a minute, see :mod:`udpkit.core.restarts`),
passes the first SIGINT/SIGTERM on to the workers as SIGTERM (each drains as a
lone server would; more SIGTERMs change nothing) and a second one as SIGKILL,
and exits 0 once every worker is done (1 if it gave up restarting one).  SIGHUP,
for an app that reloads (``serve dns``: its zone), is passed on to every worker,
each of which reloads and says so in its log and its tally; for any other app it
is a stop signal like SIGTERM.  The
workers' reports, those of dead workers included (so totals never go down),
make one summary line and one ``/metrics``.

The reports are also the workers' heartbeat.  A serving worker that has sent nothing
for ``hung_after`` seconds (stopped, deadlocked, its loop blocked) is hung: it still
holds its share of the port, so the kernel would keep handing it clients that are never
answered.  The supervisor logs it, kills it and restarts it as it would a dead one; at
a stop, a worker already hung is killed at once instead of being waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from udpkit.apps import load_app
from udpkit.core.counters import CounterSnapshot
from udpkit.core.errors import UsageError
from udpkit.core.handler import format_address
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.restarts import RestartPolicy
from udpkit.server.binding import ReusePortUnsupported
from udpkit.server.config import ServerConfig
from udpkit.server.logs import server_log
from udpkit.server.runner import format_counters, make_admission, make_proxy_policy, record_address
from udpkit.server.supervisor.port_lock import PortLock, flock_available, reserve_port
from udpkit.server.supervisor.report import (
    Ready,
    ReportTotals,
    StartFailed,
    WorkerMessage,
    WorkerReport,
    receive_message,
)
from udpkit.server.supervisor.worker import WorkerSpec, run_worker
from udpkit.service import Service

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from udpkit.server.metrics import MetricsServer, ServerCollector

_READY_TIMEOUT = 60.0
"""Seconds the workers get to import the app and bind, at start-up."""
_KILL_MARGIN = 5.0
"""Seconds past the graceful timeout before the supervisor kills a draining worker."""


class WorkersUnsupported(ReusePortUnsupported):
    """This platform lacks what ``--workers`` needs (``SO_REUSEPORT``, ``flock``)."""


def check_platform() -> None:
    """Raise :class:`WorkersUnsupported` unless ``--workers`` can run here."""
    if not hasattr(socket, "SO_REUSEPORT"):
        missing = "SO_REUSEPORT"
    elif not flock_available():
        missing = "flock (fcntl)"
    else:
        return
    raise WorkersUnsupported(
        f"--workers is not supported on this platform: it needs {missing}, which this "
        "system does not have; run without --workers"
    )


def available_cpus() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(eq=False)
class _Worker:
    slot: int
    process: BaseProcess
    connection: Connection
    ready: asyncio.Future[str | None]
    """``None`` once serving; the reason it could not start otherwise."""
    pid: int | None = None
    report: WorkerReport | None = None
    heard: float = 0.0
    """Loop time of its last message (or of its start): its heartbeat."""
    hung: bool = False


class Supervisor(Service):
    """Runs ``workers`` copies of a server on one port; ``await supervisor.serve()``."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        workers: int,
        report_interval: float = 0.5,
        hung_after: float = 10.0,
        restart_policy: RestartPolicy | None = None,
        lock_dir: Path | None = None,
        log: tuple[int, str] | None = None,
    ) -> None:
        super().__init__()
        if workers < 1:
            raise UsageError(f"workers must be >= 1 (got {workers})")
        if not report_interval > 0:
            raise UsageError("report_interval must be > 0")
        if not hung_after > 2 * report_interval:
            raise UsageError(f"the worker timeout must be over two report intervals "
                             f"({2 * report_interval:g} s)")
        self.config = config
        self.workers = workers
        self.report_interval = report_interval
        self.hung_after = hung_after
        self.hung = 0
        self._reloadable = False
        """Workers killed because their heartbeat stopped."""
        self.policy = restart_policy if restart_policy is not None else RestartPolicy()
        self.lock_dir = lock_dir
        self.log = log
        self.port = config.port
        self.addresses: list[tuple[str, int]] = []
        self.metrics_port: int | None = None
        self.restarts = 0
        self.latency = LatencyHistogram() if config.metrics is not None else None
        self._context = multiprocessing.get_context("spawn")
        self._slots: dict[int, _Worker] = {}
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._retired = ReportTotals()
        self._state = threading.Lock()  # the metrics thread reads what the loop writes
        self._lock: PortLock | None = None
        self._metrics: MetricsServer | None = None
        self._worker_config: ServerConfig | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._liveness: asyncio.TimerHandle | None = None
        self._all_done = asyncio.Event()

    # -- public state ---------------------------------------------------------

    def stats(self) -> dict[str, CounterSnapshot]:
        """The workers' counters added up (those of dead workers included)."""
        totals = self._totals()
        return {transport: totals.snapshot(transport) for transport in ("udp", "tcp")}

    def handler_outcomes(self) -> dict[str, int]:
        """The workers' handler tallies added up (:meth:`Server.handler_outcomes`)."""
        return self._totals().handler_outcomes

    def summary(self) -> str:
        totals = self._totals()
        stats = {transport: totals.snapshot(transport) for transport in ("udp", "tcp")}
        return "Summary: " + format_counters(stats, udp=self.config.udp, tcp=self.config.tcp,
                                             outcomes=totals.handler_outcomes)

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers alive now, by slot."""
        return [w.pid for _, w in sorted(self._slots.items()) if w.pid is not None]

    @property
    def alive(self) -> int:
        """Worker processes running now."""
        return len(self._slots)

    @property
    def open_connections(self) -> int:
        with self._state:
            return sum(w.report.open_connections for w in self._slots.values() if w.report)

    def _totals(self) -> ReportTotals:
        totals = ReportTotals()
        with self._state:
            totals.merge(self._retired)
            for worker in self._slots.values():
                if worker.report is not None:
                    totals.add(worker.report)
        return totals

    # -- life cycle -------------------------------------------------------------

    async def startup(self) -> None:
        config = self.config
        check_platform()
        # Fail here, once, on what every worker would fail on.
        if isinstance(config.app, str):
            handler = load_app(config.app, options=config.app_options, clock=time.monotonic)
            self._reloadable = callable(getattr(handler, "reload", None))
        make_admission(config)
        make_proxy_policy(config)
        placeholder, self._lock = reserve_port(config, lock_dir=self.lock_dir)
        try:
            self.port = placeholder.port
            self._worker_config = dataclasses.replace(
                config, port=self.port, metrics=None, reuse_port=True,
                record_latency=self.latency is not None,
            )
            if config.metrics is not None:
                self._start_metrics(*config.metrics)
            for slot in range(1, self.workers + 1):
                self._start_worker(slot)
            await self._wait_ready()
            if self.exit_requested:
                return
            for transport, socks in (("UDP", placeholder.udp), ("TCP", placeholder.tcp)):
                for sock in socks:
                    self._announce(transport, sock.getsockname())
            self._liveness = asyncio.get_running_loop().call_later(
                self.report_interval, self._check_liveness
            )
            server_log.info(
                "Serving with %d workers (pids %s), SO_REUSEPORT",
                self.workers,
                " ".join(str(pid) for pid in self.pids),
            )
        except BaseException:
            self._kill_all()
            for worker in list(self._slots.values()):
                self._detach(worker)
                worker.process.join(5)
                self._forget(worker)
            self._close()
            raise
        finally:
            placeholder.close()  # the workers hold the port now

    async def _wait_ready(self) -> None:
        pending = [worker.ready for worker in self._slots.values()]
        done, not_done = await asyncio.wait(pending, timeout=_READY_TIMEOUT)
        if self.exit_requested:
            return  # a signal came during start-up: serve() waits for the workers to go
        if not_done:
            raise UsageError(f"workers did not start within {_READY_TIMEOUT:g} s")
        for future in done:
            reason = future.result()
            if reason is not None:
                raise UsageError(reason)

    def _announce(self, transport: str, sockname: tuple[str, int]) -> None:
        address = record_address(self.addresses, sockname)
        server_log.info("Bind %s on %s...", transport, format_address(address))

    def _start_metrics(self, host: str, port: int) -> None:
        from udpkit.server.metrics import serve_metrics

        assert self.latency is not None
        self._metrics = serve_metrics(host, port, _supervisor_collector(self))
        self.metrics_port = self._metrics.port

    def _start_worker(self, slot: int) -> None:
        self._pending.pop(slot, None)
        if self.exit_requested:
            return
        assert self._worker_config is not None
        loop = asyncio.get_running_loop()
        ours, theirs = self._context.Pipe(duplex=True)
        spec = WorkerSpec(
            config=self._worker_config,
            slot=slot,
            report_interval=self.report_interval,
            log=self.log,
        )
        process = self._context.Process(
            target=run_worker, args=(spec, theirs), name=f"udpkit-worker-{slot}", daemon=False
        )
        process.start()
        theirs.close()
        worker = _Worker(slot, process, ours, loop.create_future(), process.pid, heard=loop.time())
        self._slots[slot] = worker
        loop.add_reader(ours.fileno(), self._on_message, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)

    def _on_message(self, worker: _Worker) -> None:
        try:
            while worker.connection.poll():
                self._handle(worker, receive_message(worker.connection))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.connection.fileno())

    def _handle(self, worker: _Worker, message: WorkerMessage) -> None:
        worker.heard = asyncio.get_running_loop().time()
        if isinstance(message, WorkerReport):
            with self._state:
                worker.report = message
            self._refresh_latency()
        elif isinstance(message, Ready):
            if not worker.ready.done():
                worker.ready.set_result(None)
            if self.restarts and not self.exit_requested:
                server_log.info("Worker %d restarted (pid %s)", worker.slot, message.pid)
        elif isinstance(message, StartFailed) and not worker.ready.done():
            worker.ready.set_result(message.reason)

    def _check_liveness(self) -> None:
        """Kill serving workers whose heartbeat stopped (they are restarted as dead ones)."""
        loop = asyncio.get_running_loop()
        self._liveness = None
        self._kill_hung(loop.time())
        if self._slots or not self.exit_requested:  # draining workers still report
            self._liveness = loop.call_later(self.report_interval, self._check_liveness)

    def _kill_hung(self, now: float) -> None:
        for worker in list(self._slots.values()):
            silent = now - worker.heard
            if worker.hung or not worker.ready.done() or silent <= self.hung_after:
                continue
            worker.hung = True
            self.hung += 1
            server_log.error(
                "Worker %d (pid %s) sent nothing for %.1f s (stopped or stuck): killing it",
                worker.slot, worker.pid, silent,
            )
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.kill()

    def _refresh_latency(self) -> None:
        if self.latency is None:
            return
        totals = self._totals()
        if totals.latency_counts is not None:
            self.latency.counts[:] = totals.latency_counts
            self.latency.total = totals.latency_total

    def _detach(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.process.sentinel)
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(worker.connection.fileno())

    def _on_exit(self, worker: _Worker) -> None:
        try:
            self._reap(worker)
        finally:
            self._check_done()  # whatever happened, a stop must not wait forever

    def _reap(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        self._detach(worker)
        self._on_message(worker)  # what it sent just before exiting
        worker.process.join()
        code = worker.process.exitcode
        self._forget(worker)
        if not worker.ready.done():
            worker.ready.set_result(f"worker {worker.slot} exited at start-up ({_how(code)})")
            if not self.addresses:
                return  # start-up fails as a whole (see _wait_ready)
        if self.exit_requested:
            server_log.debug("Worker %d (pid %s) %s", worker.slot, worker.pid, _how(code))
        else:
            delay = self.policy.delay(worker.slot, loop.time())
            if delay is None:
                server_log.error(
                    "Worker %d (pid %s) %s; %d restarts within %g s: giving up",
                    worker.slot, worker.pid, _how(code),
                    self.policy.max_restarts, self.policy.window,
                )
                self.exit_code = 1
                self.request_exit()
            else:
                server_log.warning(
                    "Worker %d (pid %s) %s; restarting it in %.1f s",
                    worker.slot, worker.pid, _how(code), delay,
                )
                self.restarts += 1
                self._pending[worker.slot] = loop.call_later(delay, self._start_worker,
                                                             worker.slot)

    def _forget(self, worker: _Worker) -> None:
        with self._state:
            if worker.report is not None:
                self._retired.add(worker.report)
            if self._slots.get(worker.slot) is worker:
                del self._slots[worker.slot]
        worker.connection.close()
        with contextlib.suppress(ValueError):
            worker.process.close()

    def _check_done(self) -> None:
        if self.exit_requested and not self._slots:
            self._all_done.set()

    async def main_loop(self) -> None:
        """Supervise until every worker is gone after :meth:`request_exit`."""
        await self._all_done.wait()

    async def shutdown(self) -> None:
        """Stop the workers (if not asked already), wait for them, release the port."""
        self.request_exit()
        try:
            await self._all_done.wait()  # bounded: the kill timer fires past the timeout
        finally:
            self._close()

    def request_exit(self) -> None:
        """Stop restarting, tell every worker to drain (SIGTERM)."""
        if self.exit_requested:
            return
        super().request_exit()
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        for worker in self._slots.values():
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.terminate()
        loop = asyncio.get_running_loop()
        self._kill_hung(loop.time())  # a hung worker cannot drain: do not wait for it
        if self._liveness is None and self._slots:
            self._liveness = loop.call_later(self.report_interval, self._check_liveness)
        self._kill_timer = loop.call_later(
            self.config.graceful_timeout + _KILL_MARGIN, self._kill_all
        )
        self._check_done()

    def force_exit(self) -> None:
        """Kill every worker now (what a second signal does)."""
        super().force_exit()
        self._kill_all()

    def _kill_all(self) -> None:
        for worker in self._slots.values():
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.kill()

    def _close(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            self._liveness = None
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def stopped(self) -> None:
        server_log.info("Workers: %d started, %d restarts, %d killed as hung",
                        self.workers + self.restarts, self.restarts, self.hung)
        server_log.info("%s", self.summary())

    @property
    def reloadable(self) -> bool:
        """Whether the app reloads on SIGHUP (``serve dns``), which the workers then do."""
        return self._reloadable

    def reload(self) -> None:
        """Pass SIGHUP on to every worker: each reloads and logs how it went."""
        server_log.info("Received SIGHUP, reloading %d workers...", len(self._slots))
        for worker in self._slots.values():
            if worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)

    def signal_received(self, signal_name: str, *, again: bool) -> None:
        if again:
            server_log.info("Received %s again, killing the workers.", signal_name)
        else:
            server_log.info("Received %s, stopping %d workers gracefully...", signal_name,
                            len(self._slots))


def _how(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _supervisor_collector(supervisor: Supervisor) -> ServerCollector:
    """The workers' merged counters, plus how many workers live and restarted."""
    from udpkit.server.metrics import ServerCollector

    class SupervisorCollector(ServerCollector):
        def collect(self) -> Iterator[Metric]:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

            yield from super().collect()
            alive = GaugeMetricFamily("udpkit_workers", "Worker processes alive")
            alive.add_metric([], supervisor.alive)
            yield alive
            restarts = CounterMetricFamily(
                "udpkit_worker_restarts", "Workers restarted after dying"
            )
            restarts.add_metric([], supervisor.restarts)
            yield restarts

    assert supervisor.latency is not None
    return SupervisorCollector(
        supervisor.stats, lambda: supervisor.open_connections, supervisor.latency,
        outcomes=supervisor.handler_outcomes,
    )


def serve_workers(
    config: ServerConfig,
    *,
    workers: int,
    log: tuple[int, str] | None = None,
    lock_dir: Path | None = None,
    hung_after: float = 10.0,
) -> int:
    """Run ``workers`` server processes on one port until SIGINT/SIGTERM; the exit code.

    The function behind ``udpkit serve --workers N``.  Workers are started
    with ``multiprocessing``'s *spawn* method (no fork of a process that runs
    threads), so a script calling this must guard its entry point with
    ``if __name__ == "__main__":``, and an ``app`` given as a callable must be
    importable by name (defined at module level).
    """
    supervisor = Supervisor(config, workers=workers, log=log, lock_dir=lock_dir,
                            hung_after=hung_after)
    return asyncio.run(supervisor.serve())
