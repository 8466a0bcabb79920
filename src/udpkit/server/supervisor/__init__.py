"""``udpkit serve --workers N``: N server processes on one port, under one supervisor.

Rule: a worker is an ordinary :class:`~udpkit.server.runner.Server` in its own
process with its own UDP and TCP sockets, bound with ``SO_REUSEPORT``; the
kernel spreads datagrams (by a hash of the 4-tuple) and new connections over
them, as NSD, Knot and CoreDNS do.  One module per job:

- :mod:`.port_lock`: the port is free and stays ours (lock file, free-port
  check, ``SO_REUSEPORT`` placeholder);
- :mod:`.worker`: the body of a worker process;
- :mod:`.report`: the typed messages a worker sends over its pipe;
- :mod:`.supervisor`: starts, restarts and stops the workers, adds up their
  reports for the summary and ``/metrics``.

Linux (POSIX) only: ``fcntl`` is imported only when a lock is taken, so this
package imports everywhere and :func:`check_platform` says "not supported on
this platform" where ``--workers`` cannot run.
"""

from udpkit.server.supervisor.port_lock import PortInUse, PortLock, reserve_port
from udpkit.server.supervisor.report import Ready, StartFailed, WorkerReport
from udpkit.server.supervisor.supervisor import (
    Supervisor,
    WorkersUnsupported,
    available_cpus,
    check_platform,
    serve_workers,
)

__all__ = [
    "PortInUse",
    "PortLock",
    "Ready",
    "StartFailed",
    "Supervisor",
    "WorkerReport",
    "WorkersUnsupported",
    "available_cpus",
    "check_platform",
    "reserve_port",
    "serve_workers",
]
