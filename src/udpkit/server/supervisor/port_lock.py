"""The port of ``serve --workers``: a lock file per port and a free-port check.

Rule: no port hijack.  ``SO_REUSEPORT`` lets sockets of the *same user* join
a port, so two supervisors of one user could share it by mistake.  Before
binding, the supervisor (1) takes a lock file for the port (``flock``, held
for its life), which another supervisor cannot take, and (2) binds the port
without ``SO_REUSEPORT``, which fails if anything at all holds it.  Only then
does it bind a ``SO_REUSEPORT`` placeholder (TCP not listening) that keeps the
port until the workers have joined.  Left open: a program of the same user
that binds with ``SO_REUSEPORT`` in the microseconds between (2) and the
placeholder, or while every worker is dead at once.

``fcntl`` is POSIX only: it is imported when a lock is taken, never at import
time, so ``udpkit`` imports everywhere and ``--workers`` says it is not
supported (see :func:`flock_available`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from udpkit.core.errors import UsageError
from udpkit.server.binding import BoundSockets, bind
from udpkit.server.config import ServerConfig

_LOCKED_PORT_REPICKS = 20
"""With ``port=0``: how many ports to let the kernel pick before giving up, when a
picked port is free but locked by a supervisor that has lost all its workers.
(Not ``binding._SHARED_PORT_TRIES``, which retries a bind whose later socket
found the picked port taken.)"""


class PortInUse(UsageError):
    """Another supervisor, or another program, holds the port."""


def flock_available() -> bool:
    """Whether this platform has ``flock`` (``fcntl``), which the port lock needs."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True


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
        import fcntl

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
        import fcntl

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
    tries = _LOCKED_PORT_REPICKS if config.port == 0 else 1
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
