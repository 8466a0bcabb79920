"""Every setting of a server, apart from the running server.

Rule: one dataclass, a docstring per field; the CLI maps its flags onto these
fields one to one, so a library user can do all a command-line user can.  A
built-in app's own server defaults (:attr:`udpkit.apps.App.server_defaults`:
``dns`` wants ``len16`` framing and no amplification cap) are applied here, at
construction, to the fields the caller did not give; the fields given win,
and an app's framing requirement (:attr:`udpkit.apps.App.tcp_framings`) is
checked against the result.  The CLI passes only the flags the user gave.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from udpkit.apps import BUILTIN_APPS, DEFAULT_APP
from udpkit.core.busy_poll import check_duration as check_busy_poll
from udpkit.core.errors import UsageError
from udpkit.core.framing import FRAMINGS, FramingName
from udpkit.core.handler import Handler
from udpkit.core.inflight import HANDLER_TIMEOUT, MAX_PENDING, MAX_PENDING_PER_SOURCE

DEFAULT_PORT = 9999


@dataclass(kw_only=True)
class ServerConfig:
    """How to run a udpkit server."""

    app: str | Handler = DEFAULT_APP
    """The handler: a built-in app's name (:data:`udpkit.apps.BUILTIN`: ``greeting``,
    ``echo``, ``dns``), an import string ``module:attr``, or the callable itself."""
    app_options: Mapping[str, str] = field(default_factory=dict)
    """A built-in app's own options by name, as text (``{"zone": "example.zone"}`` for
    ``dns``; :data:`udpkit.apps.APP_OPTIONS`)."""
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
    message (the tutorial's lock-step protocol); ``len16``: each message after its
    length in two bytes, network order (DNS over TCP's framing; no welcome, no
    ``exit``, an empty message closes the connection).  Not given: the app's
    (``dns``: ``len16``), else ``line``."""
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
    metrics: tuple[str, int] | None = None
    """Serve Prometheus metrics on this (host, port); port 0 picks one."""
    handler_timeout: float = HANDLER_TIMEOUT
    """Seconds an async handler's call may take; past it the request is counted in
    ``handler_timeouts`` (TCP: ``error: handler timed out`` in its place); 0: no limit."""
    max_pending: int = MAX_PENDING
    """Async handler calls running at once, per transport; a request beyond it is dropped
    and counted (``dropped_overload``; TCP: ``error: overloaded``)."""
    max_pending_per_source: int = MAX_PENDING_PER_SOURCE
    """Async handler calls running at once for one source (its rate-limit key: a /32 or
    /64), so one client cannot take the whole ``max_pending``."""
    handler_threads: int = 0
    """Run a sync handler on this many threads (``--handler-threads``), so handlers that
    block (sleep, disk, a database) do not stop the loop; it must then be thread-safe.
    0: on the event loop (fastest, and what the C fast paths need)."""
    stall_warning: float = 0.5
    """Log, with the code that blocks it, when the event loop has not run for this many
    seconds (a sync handler that blocks stalls every client); 0: no watchdog."""
    record_latency: bool = False
    """Keep a histogram of request latencies even without ``metrics`` (always kept
    with it).  Set by the supervisor of ``serve --workers`` for its workers, which
    report the histogram to the supervisor's ``/metrics``."""
    fast_path: bool = True
    """Serve UDP with the C extension (``recvmmsg``/``sendmmsg``), and split TCP lines
    and call the handler per line in C, when it is built and the handler is sync;
    ``False`` (or ``UDPKIT_NO_FASTPATH=1``) forces the pure path for both."""
    busy_poll: float = 0.0
    """Seconds (e.g. ``50e-6``) to keep polling a UDP socket without blocking after a
    wake-up that found work, and after each datagram since, before going back to sleep
    in the event loop (:mod:`udpkit.core.busy_poll`); 0: off.  Cuts the wake-up from
    each request's latency at the price of a busy core while requests keep coming;
    an idle server still sleeps.  At most 10 ms; not with ``handler_threads``."""
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    """Event loop for :func:`~udpkit.server.serve`: ``auto`` takes uvloop when it is
    installed (``pip install udpkit[fast]``), else asyncio's own."""
    reuse_port: bool = False
    """Bind with ``SO_REUSEPORT`` so other sockets of this user may share the port.
    Set by the supervisor of ``serve --workers`` for its workers, after it has made
    sure the port was free; setting it by hand skips that check."""
    proxy_protocol: bool = False
    """TCP: expect a PROXY protocol header (v1 or v2) first on connections from
    ``proxy_trusted``, and treat the client it names as the peer (logs, limits,
    metrics).  A bad header is counted and the connection closed."""
    proxy_trusted: tuple[str, ...] = ()
    """Networks (CIDR) of the load balancers that send the PROXY header; connections
    from elsewhere are served as direct clients and any header they send is not
    honoured.  Required with ``proxy_protocol``: ``("any",)`` makes every connection
    start with the header, which lets any client choose the source address its
    limits and access lists see, so it must be asked for by name."""

    # -- abuse limits (see README, "Limits and their defaults") ----------------
    rate_limit: float | None = 1000.0
    """Requests per second allowed per source prefix, both transports; ``None``: off."""
    rate_burst: float | None = None
    """Requests a quiet source may send at once; ``None``: twice ``rate_limit``."""
    rate_table_size: int = 65536
    """Slots of the fixed-size rate-limit table (memory is fixed, whatever the sources)."""
    ipv4_prefix: int = 32
    """IPv4 addresses sharing this prefix share one rate limit."""
    ipv6_prefix: int = 64
    """IPv6 addresses sharing this prefix share one rate limit (a /64 is one host's)."""
    allow: tuple[str, ...] = ()
    """If not empty, only sources in these networks (CIDR) are served."""
    deny: tuple[str, ...] = ()
    """Sources in these networks (CIDR) are never served."""
    limit_exempt: tuple[str, ...] = ("loopback",)
    """Networks exempt from the rate limit and the per-source TCP cap.  Loopback
    sources cannot be spoofed from outside the machine, and benchmarks use them."""
    max_amplification: float | None = 10.0
    """UDP replies larger than this many times their request are dropped; ``None``: off.
    Not given: the app's (``dns``: off, its answers outgrow queries by design and
    response-rate limiting is its defence), else 10."""
    tcp_max_connections: int = 15000
    """Open TCP connections at most; more are told ``busy`` and closed."""
    tcp_max_per_source: int = 256
    """Open TCP connections per source prefix at most."""
    tcp_idle_timeout: float = 60.0
    """Close a TCP connection that sends no complete request for this long."""
    tcp_line_timeout: float = 10.0
    """Close a TCP connection whose started request line is not finished within this."""
    tcp_write_timeout: float = 10.0
    """Close a TCP connection that has not read its replies for this long."""
    tcp_write_buffer: int = 65536
    """Reply bytes buffered per TCP connection before reading from it pauses."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port must be in 0..65535 (got {self.port})")
        if not (self.udp or self.tcp):
            raise UsageError("nothing to serve: both UDP and TCP are off")
        if not 1 <= self.max_request <= 65507:
            raise UsageError(f"max_request must be in 1..65507 (got {self.max_request})")
        if self.tcp_framing not in FRAMINGS:
            raise UsageError(
                f"tcp_framing must be one of {', '.join(FRAMINGS)} (got {self.tcp_framing!r})"
            )
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise UsageError(f"loop must be 'auto', 'asyncio' or 'uvloop' (got {self.loop!r})")
        if self.udp_send_queue < 0 or self.tcp_pipeline < 1 or self.tcp_backlog < 1:
            raise UsageError("queue sizes must be positive")
        if self.proxy_protocol and not self.proxy_trusted:
            raise UsageError(
                "the PROXY protocol needs --proxy-trusted CIDR, the load balancers that send "
                "the header (--proxy-trusted any lets every client choose its own source)"
            )
        try:
            check_busy_poll(self.busy_poll)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if self.busy_poll and self.handler_threads:
            raise UsageError(
                "--busy-poll and --handler-threads do not mix: handler threads take the "
                "pure path, whose spin holds the GIL those threads need (choose one)"
            )
        if self.handler_timeout < 0:
            raise UsageError(f"handler_timeout must be >= 0 (got {self.handler_timeout})")
        if self.max_pending < 1 or self.max_pending_per_source < 1:
            raise UsageError("max_pending and max_pending_per_source must be >= 1")
        if self.handler_threads < 0 or self.stall_warning < 0:
            raise UsageError("handler_threads and stall_warning must be >= 0")
        if self.graceful_timeout < 0:
            raise UsageError("graceful_timeout must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise UsageError(f"rate_limit must be > 0 (got {self.rate_limit}); None turns it off")
        if self.max_amplification is not None and self.max_amplification <= 0:
            raise UsageError(f"max_amplification must be > 0 (got {self.max_amplification})")
        for name in ("tcp_idle_timeout", "tcp_line_timeout", "tcp_write_timeout"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0")
        if self.tcp_max_connections < 1 or self.tcp_max_per_source < 1:
            raise UsageError("TCP connection caps must be >= 1")
        if self.tcp_write_buffer < 1024:
            raise UsageError("tcp_write_buffer must be >= 1024")
        self.recv_buffer = max(self.recv_buffer, self.max_request + 1)

    def _apply_app(self, given: frozenset[str]) -> None:
        """The app's server defaults for the fields not in ``given``; refuse a TCP
        framing the app cannot use."""
        app = BUILTIN_APPS.get(self.app) if isinstance(self.app, str) else None
        if app is None:
            return
        names = {f.name for f in fields(self)}
        for name, value in app.server_defaults.items():
            if name not in names:
                raise TypeError(f"app {app.name!r}: no server setting {name!r}")
            if name not in given:
                setattr(self, name, value)
        if self.tcp and app.tcp_framings is not None and self.tcp_framing not in app.tcp_framings:
            raise UsageError(
                f"app {app.name!r} over TCP needs --tcp-framing "
                f"{' or '.join(app.tcp_framings)} (got {self.tcp_framing}; --no-tcp serves "
                "UDP alone)"
            )


def _with_app_defaults(init: Callable[..., None]) -> Callable[..., None]:
    """``ServerConfig(**settings)``: the dataclass's own ``__init__``, then the app's
    defaults for the settings not given (which only the call itself knows)."""

    @functools.wraps(init)
    def __init__(self: ServerConfig, **settings: Any) -> None:
        init(self, **settings)
        self._apply_app(frozenset(settings))

    return __init__


ServerConfig.__init__ = _with_app_defaults(ServerConfig.__init__)  # type: ignore[method-assign]
