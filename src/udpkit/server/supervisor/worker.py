"""The body of one ``serve --workers`` process: an ordinary server that reports.

Rule: a worker is a :class:`~udpkit.server.runner.Server` in its own process
with its own UDP and TCP sockets, bound with ``SO_REUSEPORT``.  It ignores
SIGINT (Ctrl-C reaches the whole process group; the supervisor alone
decides), takes every SIGTERM as one graceful stop, stops when its supervisor
is gone, and sends :mod:`~udpkit.server.supervisor.report` messages, nothing
else, over its pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from multiprocessing.connection import Connection

from udpkit.core.errors import UsageError
from udpkit.core.handler import format_address
from udpkit.server.config import ServerConfig
from udpkit.server.event_loops import run_with_loop
from udpkit.server.logs import configure, server_log
from udpkit.server.runner import Server, format_counters, record_address
from udpkit.server.supervisor.report import Ready, StartFailed, WorkerReport, send_message

FAILED_EXIT = 3
"""Exit code of a worker that could not start (bad app, port lost)."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to it)."""

    config: ServerConfig
    slot: int
    """Which worker this is, 1..N (a restarted worker keeps its slot); names its log lines."""
    report_interval: float
    """Seconds between two :class:`WorkerReport` messages."""
    log: tuple[int, str] | None
    """Log level and format to configure, or ``None`` to leave logging alone."""


class _WorkerServer(Server):
    """A :class:`Server` that leaves announcing the port to its supervisor."""

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


def run_worker(spec: WorkerSpec, connection: Connection) -> None:
    """The body of a worker process (the target of ``multiprocessing``)."""
    # Ctrl-C, and the hang-up of a closed terminal, reach the whole process group;
    # the supervisor alone decides, and tells the workers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if spec.log is not None:
        configure(spec.log[0], fmt=spec.log[1])
        prefix = _Prefix(f"worker {spec.slot} (pid {os.getpid()}): ")
        for handler in logging.getLogger("udpkit").handlers:
            handler.addFilter(prefix)
    try:
        run_with_loop(_serve_worker(spec, connection), spec.config.loop)
    except UsageError as exc:
        send_message(connection, StartFailed(str(exc)))
        raise SystemExit(FAILED_EXIT) from None


async def _serve_worker(spec: WorkerSpec, connection: Connection) -> None:
    loop = asyncio.get_running_loop()
    server = _WorkerServer(spec.config)
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
            send_message(connection, WorkerReport.of(server))

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    if server.reloadable and hasattr(signal, "SIGHUP"):
        # The supervisor passes SIGHUP on for an app that reloads (serve dns's zone);
        # a terminal's hang-up reaching the whole group reloads once more, harmlessly.
        loop.add_signal_handler(signal.SIGHUP, server.reload)
    loop.add_reader(connection.fileno(), supervisor_gone)
    send_message(connection, Ready(os.getpid()))
    reporter = loop.create_task(report_periodically())
    try:
        await server.main_loop()
    finally:
        try:
            await server.shutdown()  # still reporting: a draining worker is not a hung one
        finally:
            reporter.cancel()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(connection.fileno())
        send_message(connection, WorkerReport.of(server))
        server_log.info(
            "Stopped: %s", format_counters(server.stats(), udp=server.config.udp,
                                            tcp=server.config.tcp,
                                            outcomes=server.handler_outcomes())
        )
