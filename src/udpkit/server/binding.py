"""Open the listening sockets: UDP and TCP on one port number.

Rule: both transports get the same port; ``port=0`` picks a port free for
both.  UDP never gets ``SO_REUSEADDR`` (that would let another process hijack
the port); TCP gets it only so a restart is not blocked by ``TIME_WAIT``.  A
host name binds every address it resolves to; ``::`` is dual stack.

``reuse_port=True`` (the workers of ``serve --workers``) sets ``SO_REUSEPORT``
on both transports, so sockets of the same user may share the port and the
kernel spreads datagrams and connections over them (socket(7)).  Only the
supervisor in :mod:`udpkit.server.supervisor` asks for it, after checking that
the port is free.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from udpkit.core.errors import UsageError

_SHARED_PORT_TRIES = 50
"""With ``port=0``: how many ports to let the kernel pick (for the first socket)
before giving up, when the picked port is taken for one of the later sockets
(the other transport, another address of the host)."""


class ReusePortUnsupported(UsageError):
    """This system has no ``SO_REUSEPORT`` (or refuses it), so ``--workers`` cannot work."""


@dataclass(slots=True)
class BoundSockets:
    udp: list[socket.socket]
    tcp: list[socket.socket]
    port: int

    def close(self) -> None:
        for sock in (*self.udp, *self.tcp):
            sock.close()


def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[str, int]]]:
    """The distinct (family, address) pairs to bind for ``host``."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    seen: list[tuple[socket.AddressFamily, tuple[str, int]]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        entry = (family, (str(sockaddr[0]), int(sockaddr[1])))
        if entry not in seen:
            seen.append(entry)
    if not seen:
        raise UsageError(f"host {host!r} has no IPv4 or IPv6 address")
    return seen


def _open(
    kind: socket.SocketKind,
    family: socket.AddressFamily,
    address: tuple[str, int],
    backlog: int,
    *,
    reuse_port: bool = False,
    listen: bool = True,
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            _set_reuse_port(sock)
        if family == socket.AF_INET6:
            # "::" serves IPv4 too; any other IPv6 address only IPv6.
            dual = address[0] == "::"
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM and listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _set_reuse_port(sock: socket.socket) -> None:
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise ReusePortUnsupported(
            "--workers needs SO_REUSEPORT, which this system does not have "
            "(Linux >= 3.9 balances UDP and TCP over the workers); run without --workers"
        )
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError as exc:
        raise ReusePortUnsupported(
            f"--workers needs SO_REUSEPORT, which this system refuses ({exc.strerror or exc}); "
            "run without --workers"
        ) from None


def bind(
    host: str,
    port: int,
    *,
    udp: bool,
    tcp: bool,
    backlog: int = 1024,
    reuse_port: bool = False,
    listen: bool = True,
) -> BoundSockets:
    """Bind UDP and/or TCP on ``host`` and one shared ``port``.

    ``reuse_port`` sets ``SO_REUSEPORT`` (sockets of this user may join the
    port); ``listen=False`` binds TCP without listening (a placeholder that
    holds the port but takes no connections).  Raises :class:`UsageError`
    saying which address and transport failed.
    """
    targets = resolve(host, port)
    tries = _SHARED_PORT_TRIES if port == 0 else 1
    for attempt in range(tries):
        bound = BoundSockets(udp=[], tcp=[], port=port)
        try:
            for family, address in targets:
                for kind, enabled, into in (
                    (socket.SOCK_DGRAM, udp, bound.udp),
                    (socket.SOCK_STREAM, tcp, bound.tcp),
                ):
                    if not enabled:
                        continue
                    sock = _open(
                        kind,
                        family,
                        (address[0], bound.port),
                        backlog,
                        reuse_port=reuse_port,
                        listen=listen,
                    )
                    into.append(sock)
                    bound.port = sock.getsockname()[1]
            return bound
        except OSError as exc:
            bound.close()
            if exc.errno == errno.EADDRINUSE and port == 0 and attempt + 1 < tries:
                continue  # the port picked for the first socket was taken for another
            what = "UDP and TCP" if udp and tcp else ("UDP" if udp else "TCP")
            raise UsageError(
                f"cannot bind {what} on {host}:{bound.port or port}: {exc.strerror or exc}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover
