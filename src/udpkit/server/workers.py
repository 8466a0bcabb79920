"""``udpkit serve --workers N``: N server processes on one port, under one supervisor.

Rule: a worker is an ordinary :class:`~udpkit.server.runner.Server` in its own
process with its own UDP and TCP sockets, bound with ``SO_REUSEPORT``; the
kernel spreads datagrams (by a hash of the 4-tuple) and new connections over
them, as NSD, Knot and CoreDNS do.  The supervisor serves no requests: it
holds the port, restarts a worker that dies (with backoff, a bounded number
of times a minute, see :mod:`udpkit.core.restarts`), passes the first
SIGINT/SIGTERM on to the workers as SIGTERM (each drains as a lone server
would; more SIGTERMs change nothing) and a second one as SIGKILL, and exits 0
once every worker is done.

Counters: each worker sends its frozen counters over a pipe every
``report_interval`` seconds and once more at exit; the supervisor adds them
up (those of dead workers are kept, so totals never go down) for one summary
line and one ``/metrics``.  Why not ``prometheus_client``'s multiprocess mode:
it only knows its own metric objects (our collectors read the counters at
scrape time and keep Prometheus off the request path), needs a directory of
memory-mapped files that must be wiped between runs, and would not give the
exit summary anyway; a pipe of small snapshots does both and costs nothing
per request.  A worker killed with SIGKILL loses what it counted since its
last report (at most ``report_interval`` seconds' worth).

No port hijack: ``SO_REUSEPORT`` lets sockets of the *same user* join a port,
so two supervisors of one user could share it by mistake.  Before binding,
the supervisor (1) takes a lock file for the port (``flock``, held for its
life), which another supervisor cannot take, and (2) binds the port without
``SO_REUSEPORT``, which fails if anything at all holds it.  Only then does it
bind a ``SO_REUSEPORT`` placeholder (TCP not listening) that keeps the port
until the workers have joined.  Left open: a program of the same user that
binds with ``SO_REUSEPORT`` in the microseconds between (2) and the
placeholder, or while every worker is dead at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import multiprocessing
import os
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from udpkit.apps import load_app
from udpkit.core.counters import CounterSnapshot
from udpkit.core.errors import UsageError
from udpkit.core.handler import format_address
from udpkit.core.histogram import LatencyHistogram
from udpkit.core.restarts import RestartPolicy
from udpkit.server.binding import BoundSockets, ReusePortUnsupported, bind
from udpkit.server.config import ServerConfig
from udpkit.server.event_loops import run_with_loop
from udpkit.server.logs import configure, server_log
from udpkit.server.runner import (
    Server,
    format_counters,
    make_admission,
    make_proxy_policy,
    record_address,
)
from udpkit.signals import StopSignals

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from udpkit.server.metrics import MetricsServer, ServerCollector

_PORT_ZERO_TRIES = 20
_READY_TIMEOUT = 60.0
"""Seconds the workers get to import the app and bind, at start-up."""
_KILL_MARGIN = 5.0
"""Seconds past the graceful timeout before the supervisor kills a draining worker."""
_FAILED_EXIT = 3
"""Exit code of a worker that could not start (bad app, port lost)."""

Report = dict[str, Any]
"""What a worker sends: ``udp``/``tcp`` counters, ``open`` connections, latency buckets."""


def available_cpus() -> int:
    """The CPUs this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the port: lock file and reservation -----------------------------------------


class PortInUse(UsageError):
    """Another supervisor, or another program, holds the port."""


def default_lock_dir() -> Path:
    """``$UDPKIT_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/udpkit``, else ``/tmp/udpkit-<uid>``."""
    explicit = os.environ.get("UDPKIT_LOCK_DIR")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "udpkit"
    return Path(tempfile.gettempdir()) / f"udpkit-{os.getuid()}"


class PortLock:
    """An exclusive ``flock`` on ``<dir>/port-<N>.lock``, released when the holder exits.

    Lock files are never deleted: unlinking a locked file lets a second
    process lock a new file of the same name while the first still runs.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, port: int, directory: Path | None = None) -> PortLock:
        directory = directory if directory is not None else default_lock_dir()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(directory)
        except OSError as exc:
            raise UsageError(f"cannot create lock directory {directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise UsageError(f"lock directory {directory} is not a directory of this user")
        path = directory / f"port-{port}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot open lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise PortInUse(
                f"port {port} is already served by another `udpkit serve --workers` "
                f"(pid {holder}, lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def reserve_port(
    config: ServerConfig, *, lock_dir: Path | None = None
) -> tuple[BoundSockets, PortLock]:
    """Make sure the port is free, then hold it with ``SO_REUSEPORT`` placeholders.

    Returns the placeholders (UDP bound, TCP bound but not listening, so
    neither is handed connections) and the lock; raises :class:`UsageError`.
    """
    tries = _PORT_ZERO_TRIES if config.port == 0 else 1
    for _ in range(tries):
        lock = PortLock.acquire(config.port, lock_dir) if config.port else None
        try:
            # Without SO_REUSEPORT: fails if anything, of any user, holds the port.
            probe = bind(
                config.host, config.port, udp=config.udp, tcp=config.tcp, listen=False
            )
        except UsageError as exc:
            if lock is not None:
                lock.release()
            raise PortInUse(str(exc)) from None
        port = probe.port
        try:
            if lock is None:
                try:
                    lock = PortLock.acquire(port, lock_dir)
                except PortInUse:
                    continue  # port 0 picked a port whose supervisor lost its workers
        finally:
            probe.close()
        try:
            placeholder = bind(
                config.host, port, udp=config.udp, tcp=config.tcp, reuse_port=True, listen=False
            )
        except BaseException:
            lock.release()
            raise
        return placeholder, lock
    raise PortInUse("no free port found for --workers")


# -- a worker process -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to it)."""

    config: ServerConfig
    slot: int
    report_interval: float
    latency: bool
    log: tuple[int, str] | None


class _WorkerServer(Server):
    """A :class:`Server` that leaves announcing the port to its supervisor."""

    slot = 0

    def _announce(self, transport: str, sockname: tuple[str, int]) -> None:
        address = record_address(self.addresses, sockname)
        server_log.debug("Listening %s on %s (SO_REUSEPORT)", transport, format_address(address))


class _Prefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.msg.startswith(self.prefix):
            record.msg = self.prefix + record.msg
        return True


def _send(connection: Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):
        connection.send(message)


def _report(server: Server) -> Report:
    stats = server.stats()
    latency = server.latency
    return {
        "udp": stats["udp"].as_dict(),
        "tcp": stats["tcp"].as_dict(),
        "open": server.open_connections,
        "latency": list(latency.counts) if latency is not None else None,
        "latency_total": latency.total if latency is not None else 0.0,
    }


def run_worker(spec: WorkerSpec, connection: Connection) -> None:
    """The body of a worker process (the target of ``multiprocessing``)."""
    # Ctrl-C reaches the whole process group; the supervisor alone decides,
    # and tells the workers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.log is not None:
        configure(spec.log[0], fmt=spec.log[1])
        prefix = _Prefix(f"worker {spec.slot} (pid {os.getpid()}): ")
        for handler in logging.getLogger("udpkit").handlers:
            handler.addFilter(prefix)
    try:
        run_with_loop(_serve_worker(spec, connection), spec.config.loop)
    except UsageError as exc:
        _send(connection, ("failed", str(exc)))
        raise SystemExit(_FAILED_EXIT) from None


async def _serve_worker(spec: WorkerSpec, connection: Connection) -> None:
    loop = asyncio.get_running_loop()
    server = _WorkerServer(spec.config)
    server.slot = spec.slot
    if spec.latency:
        server.latency = LatencyHistogram()
    await server.startup()

    def on_sigterm() -> None:
        # Always graceful, however many arrive: systemd's default KillMode and
        # `kill -TERM -<group>` signal the workers and the supervisor, which
        # passes it on again.  Forcing is the supervisor's job (SIGKILL).
        server.request_exit()

    def supervisor_gone() -> None:
        # The supervisor never writes: readable means end of file, it is gone.
        loop.remove_reader(connection.fileno())
        server_log.warning("Supervisor gone; stopping")
        server.request_exit()

    async def report_periodically() -> None:
        while True:
            await asyncio.sleep(spec.report_interval)
            _send(connection, ("report", _report(server)))

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_reader(connection.fileno(), supervisor_gone)
    _send(connection, ("ready", os.getpid()))
    reporter = loop.create_task(report_periodically())
    try:
        await server.main_loop()
    finally:
        reporter.cancel()
        await server.shutdown()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(connection.fileno())
        _send(connection, ("final", _report(server)))
        server_log.info(
            "Stopped: %s", format_counters(server.stats(), udp=server.config.udp,
                                            tcp=server.config.tcp)
        )


# -- the supervisor ---------------------------------------------------------------


class _Totals:
    """Counters added up over reports."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, int]] = {"udp": {}, "tcp": {}}
        self.latency: list[int] | None = None
        self.latency_total = 0.0

    def add(self, report: Report) -> None:
        """Add one worker's report."""
        self._add(report, report.get("latency"), report.get("latency_total", 0.0))

    def merge(self, other: _Totals) -> None:
        self._add(other.counters, other.latency, other.latency_total)

    def _add(self, counters: Report, latency: list[int] | None, latency_total: float) -> None:
        for transport in ("udp", "tcp"):
            into = self.counters[transport]
            for name, value in counters[transport].items():
                into[name] = into.get(name, 0) + value
        if latency is not None:
            if self.latency is None:
                self.latency = [0] * len(latency)
            for index, count in enumerate(latency):
                self.latency[index] += count
            self.latency_total += latency_total


@dataclasses.dataclass(eq=False)
class _Worker:
    slot: int
    process: BaseProcess
    connection: Connection
    ready: asyncio.Future[str | None]
    """``None`` once serving; the reason it could not start otherwise."""
    pid: int | None = None
    report: Report | None = None


class Supervisor:
    """Runs ``workers`` copies of a server on one port; ``await supervisor.serve()``."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        workers: int,
        report_interval: float = 0.5,
        restart_policy: RestartPolicy | None = None,
        lock_dir: Path | None = None,
        log: tuple[int, str] | None = None,
    ) -> None:
        if workers < 1:
            raise UsageError(f"workers must be >= 1 (got {workers})")
        if not report_interval > 0:
            raise UsageError("report_interval must be > 0")
        self.config = config
        self.workers = workers
        self.report_interval = report_interval
        self.policy = restart_policy if restart_policy is not None else RestartPolicy()
        self.lock_dir = lock_dir
        self.log = log
        self.port = config.port
        self.addresses: list[tuple[str, int]] = []
        self.metrics_port: int | None = None
        self.restarts = 0
        self.exit_code = 0
        self.latency = LatencyHistogram() if config.metrics is not None else None
        self._context = multiprocessing.get_context("spawn")
        self._slots: dict[int, _Worker] = {}
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._retired = _Totals()
        self._state = threading.Lock()  # the metrics thread reads what the loop writes
        self._lock: PortLock | None = None
        self._metrics: MetricsServer | None = None
        self._worker_config: ServerConfig | None = None
        self._stopping = False
        self._kill_timer: asyncio.TimerHandle | None = None
        self._all_done: asyncio.Event | None = None

    # -- public state ---------------------------------------------------------

    def stats(self) -> dict[str, CounterSnapshot]:
        """The workers' counters added up (those of dead workers included)."""
        totals = self._totals()
        return {
            transport: CounterSnapshot(**totals.counters[transport]) for transport in ("udp", "tcp")
        }

    def summary(self) -> str:
        return "Summary: " + format_counters(self.stats(), udp=self.config.udp,
                                             tcp=self.config.tcp)

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
            return sum(w.report["open"] for w in self._slots.values() if w.report)

    def _totals(self) -> _Totals:
        totals = _Totals()
        with self._state:
            totals.merge(self._retired)
            for worker in self._slots.values():
                if worker.report is not None:
                    totals.add(worker.report)
        return totals

    # -- life cycle -------------------------------------------------------------

    async def startup(self) -> None:
        config = self.config
        # Fail here, once, on what every worker would fail on.
        if isinstance(config.app, str):
            load_app(config.app)
        make_admission(config)
        make_proxy_policy(config)
        if not hasattr(socket, "SO_REUSEPORT"):
            raise ReusePortUnsupported(
                "--workers needs SO_REUSEPORT, which this system does not have; "
                "run without --workers"
            )
        self._all_done = asyncio.Event()
        placeholder, self._lock = reserve_port(config, lock_dir=self.lock_dir)
        try:
            self.port = placeholder.port
            self._worker_config = dataclasses.replace(
                config, port=self.port, metrics=None, reuse_port=True
            )
            if config.metrics is not None:
                self._start_metrics(*config.metrics)
            for slot in range(1, self.workers + 1):
                self._start_worker(slot)
            await self._wait_ready()
            if self._stopping:
                return
            for transport, socks in (("UDP", placeholder.udp), ("TCP", placeholder.tcp)):
                for sock in socks:
                    self._announce(transport, sock.getsockname())
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
        if self._stopping:
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
        if self._stopping:
            return
        assert self._worker_config is not None
        loop = asyncio.get_running_loop()
        ours, theirs = self._context.Pipe(duplex=True)
        spec = WorkerSpec(
            config=self._worker_config,
            slot=slot,
            report_interval=self.report_interval,
            latency=self.latency is not None,
            log=self.log,
        )
        process = self._context.Process(
            target=run_worker, args=(spec, theirs), name=f"udpkit-worker-{slot}", daemon=False
        )
        process.start()
        theirs.close()
        worker = _Worker(slot, process, ours, loop.create_future(), process.pid)
        self._slots[slot] = worker
        loop.add_reader(ours.fileno(), self._on_message, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)

    def _on_message(self, worker: _Worker) -> None:
        try:
            while worker.connection.poll():
                kind, body = worker.connection.recv()
                self._handle(worker, kind, body)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.connection.fileno())

    def _handle(self, worker: _Worker, kind: str, body: Any) -> None:
        if kind in ("report", "final"):
            with self._state:
                worker.report = body
            self._refresh_latency()
        elif kind == "ready":
            if not worker.ready.done():
                worker.ready.set_result(None)
            if self.restarts and not self._stopping:
                server_log.info("Worker %d restarted (pid %s)", worker.slot, body)
        elif kind == "failed" and not worker.ready.done():
            worker.ready.set_result(str(body))

    def _refresh_latency(self) -> None:
        if self.latency is None:
            return
        totals = self._totals()
        if totals.latency is not None:
            self.latency.counts[:] = totals.latency
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
        if self._stopping:
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
        if self._stopping and not self._slots and self._all_done is not None:
            self._all_done.set()

    async def main_loop(self) -> None:
        assert self._all_done is not None
        await self._all_done.wait()

    def request_exit(self) -> None:
        """Stop restarting, tell every worker to drain (SIGTERM)."""
        if self._stopping:
            return
        self._stopping = True
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        for worker in self._slots.values():
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.terminate()
        loop = asyncio.get_running_loop()
        self._kill_timer = loop.call_later(
            self.config.graceful_timeout + _KILL_MARGIN, self._kill_all
        )
        self._check_done()

    def force_exit(self) -> None:
        """Kill every worker now (what a second signal does)."""
        self.request_exit()
        self._kill_all()

    def _kill_all(self) -> None:
        for worker in self._slots.values():
            with contextlib.suppress(ProcessLookupError, ValueError):
                worker.process.kill()

    def _close(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def serve(self, *, install_signals: bool = True) -> int:
        """Start the workers, supervise them until a signal, return the exit code."""
        with StopSignals(self._stop_gracefully, self._stop_now, install=install_signals):
            await self.startup()
            try:
                await self.main_loop()
            finally:
                self._close()
                server_log.info("Workers: %d started, %d restarts",
                                self.workers + self.restarts, self.restarts)
                server_log.info("%s", self.summary())
        return self.exit_code

    def _stop_gracefully(self, signal_name: str) -> None:
        server_log.info("Received %s, stopping %d workers gracefully...", signal_name,
                        len(self._slots))
        self.request_exit()

    def _stop_now(self, signal_name: str) -> None:
        server_log.info("Received %s again, killing the workers.", signal_name)
        self.force_exit()

    # -- async context manager (tests, library use) -------------------------------

    async def __aenter__(self) -> Supervisor:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.request_exit()
        try:
            await self.main_loop()
        finally:
            self._close()


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
        supervisor.stats, lambda: supervisor.open_connections, supervisor.latency
    )


def serve_workers(
    config: ServerConfig,
    *,
    workers: int,
    log: tuple[int, str] | None = None,
    lock_dir: Path | None = None,
) -> int:
    """Run ``workers`` server processes on one port until SIGINT/SIGTERM; the exit code.

    The function behind ``udpkit serve --workers N``.  Workers are started
    with ``multiprocessing``'s *spawn* method (no fork of a process that runs
    threads), so a script calling this must guard its entry point with
    ``if __name__ == "__main__":``, and an ``app`` given as a callable must be
    importable by name (defined at module level).
    """
    supervisor = Supervisor(config, workers=workers, log=log, lock_dir=lock_dir)
    return asyncio.run(supervisor.serve())
