"""Every setting of a server, apart from the running server.

Rule: one dataclass, a docstring per field; the CLI maps its flags onto these
fields one to one, so a library user can do all a command-line user can.
"""

from __future__ import annotations

from dataclasses import dataclass

from udpkit.core.errors import UsageError
from udpkit.core.framing import FramingName
from udpkit.core.handler import Handler

DEFAULT_PORT = 9999


@dataclass(kw_only=True)
class ServerConfig:
    """How to run a udpkit server."""

    app: str | Handler = "greeting"
    """The handler: a built-in app name (``greeting``, ``echo``), an import string
    ``module:attr``, or the callable itself."""
    host: str = "127.0.0.1"
    """Address or host name to bind; ``::`` binds IPv6 and IPv4 (dual stack)."""
    port: int = DEFAULT_PORT
    """Port for both transports; 0 picks one free port for both."""
    udp: bool = True
    """Serve UDP."""
    tcp: bool = True
    """Serve TCP on the same port number."""
    tcp_framing: FramingName = "line"
    """``line``: newline-delimited messages; ``raw``: each received chunk is one
    message (the tutorial's lock-step protocol)."""
    max_request: int = 1024
    """Largest request in bytes (a datagram, or a TCP line without its terminator)."""
    recv_buffer: int = 2048
    """UDP receive buffer per datagram; a larger datagram is truncated by the kernel,
    detected (``MSG_TRUNC``) and dropped, never answered.  Raised to
    ``max_request + 1`` if smaller."""
    udp_send_queue: int = 1024
    """Replies held while the UDP socket is full; beyond it they are dropped and counted."""
    tcp_backlog: int = 1024
    """Pending TCP connections the kernel holds before ``accept``."""
    tcp_pipeline: int = 64
    """Requests of one TCP connection awaiting an async handler before reading pauses."""
    access_log: bool = False
    """Log one line per request (off by default: it costs throughput)."""
    graceful_timeout: float = 3.0
    """Seconds a shutdown waits for in-flight requests before closing anyway."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be in 0..65535 (got {self.port})")
        if not (self.udp or self.tcp):
            raise UsageError("nothing to serve: both UDP and TCP are off")
        if not 1 <= self.max_request <= 65507:
            raise UsageError(f"max_request must be in 1..65507 (got {self.max_request})")
        if self.tcp_framing not in ("line", "raw"):
            raise UsageError(f"tcp_framing must be 'line' or 'raw' (got {self.tcp_framing!r})")
        if self.udp_send_queue < 0 or self.tcp_pipeline < 1 or self.tcp_backlog < 1:
            raise UsageError("queue sizes must be positive")
        if self.graceful_timeout < 0:
            raise UsageError("graceful_timeout must be >= 0")
        self.recv_buffer = max(self.recv_buffer, self.max_request + 1)
