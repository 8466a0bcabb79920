"""``udpkit serve``: run a server (calls :func:`udpkit.server.serve`).

Rule: the address is ``--host``/``--port`` (uvicorn's spelling) or ``--bind
HOST:PORT``, which sets both; errors take the one path of
:mod:`udpkit.cli.errors`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from udpkit.apps import APP_OPTIONS, BUILTIN, DEFAULT_APP
from udpkit.cli.errors import UdpkitCommand
from udpkit.cli.params import LOG_FORMAT_HELP, LOG_LEVEL_HELP, LOG_LEVELS, HostPort, Port
from udpkit.core.addresses import is_ascii_decimal, parse_host_port
from udpkit.core.errors import UsageError
from udpkit.core.framing import FRAMINGS, framing_name
from udpkit.core.impairment import parse_duration
from udpkit.server import ServerConfig
from udpkit.server import serve as run_server
from udpkit.server.logs import configure
from udpkit.server.supervisor import available_cpus, serve_workers

_defaults = ServerConfig()


def _workers(value: str | None) -> int | None:
    """``auto`` (one per CPU), a positive number, or ``None`` (no supervisor)."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return available_cpus()
    if not is_ascii_decimal(value.strip()) or int(value) < 1:
        raise UsageError(f"--workers must be a number >= 1 or 'auto' (got {value!r})")
    return int(value)


def _optional_float(value: str, name: str) -> float | None:
    """A positive number, or ``off``."""
    if value.strip().lower() in ("off", "none", "0"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number or 'off' (got {value!r})") from None
    if not number > 0:
        raise UsageError(f"{name} must be > 0 or 'off' (got {value!r})")
    return number


F = TypeVar("F", bound=Callable[..., Any])


def _app_options(command: F) -> F:
    """One flag per built-in app's own option (``--zone`` of ``dns``), from the registry."""
    for name, (_, option) in reversed(list(APP_OPTIONS.items())):
        command = click.option(f"--{name}", default=None, metavar=option.metavar,
                               help=option.help)(command)
    return command


def _given(settings: dict[str, Any], *, computed: tuple[str, ...] = ()) -> dict[str, Any]:
    """``settings`` without those whose flag the user left at its default, so that
    :class:`ServerConfig` applies its own (and the app's: ``dns`` over TCP is
    ``len16``); ``computed``: settings made from other flags, always kept."""
    context = click.get_current_context()
    names = {parameter.name for parameter in context.command.params}
    return {name: value for name, value in settings.items()
            if name in computed or name not in names
            or context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}


def _busy_poll(value: str) -> float:
    """``off``/``0``, or a duration with its unit (``50us``, ``0.2ms``)."""
    if value.strip().lower() in ("off", "0"):
        return 0.0
    return parse_duration(value)


_RANK = {click.core.ParameterSource.COMMANDLINE: 2, click.core.ParameterSource.ENVIRONMENT: 1}


def _address(bind: tuple[str, int], host: str, port: int) -> tuple[str, int]:
    """``--bind`` or ``--host``/``--port``: the command line wins over the environment;
    both given at the same level is a usage error."""
    context = click.get_current_context()
    rank = {name: _RANK.get(context.get_parameter_source(name), 0)  # type: ignore[arg-type]
            for name in ("bind", "host", "port")}
    separate = max(rank["host"], rank["port"])
    if rank["bind"] == separate:
        raise UsageError("--bind sets host and port: give it alone, or --host and --port")
    return bind if rank["bind"] > separate else (host, port)


@click.command(
    cls=UdpkitCommand,
    help=f"Serve APP ({', '.join(BUILTIN)} or module:attr) over UDP and TCP on one port.",
)
@click.argument("app", default=DEFAULT_APP, required=False)
@click.option("--host", default=_defaults.host, show_default=True,
              help="Address or host name to bind ('::' for IPv6 and IPv4).")
@click.option("--port", default=_defaults.port, type=Port(allow_zero=True), show_default=True,
              help="Port for UDP and TCP; 0 picks a free one and prints it.")
@click.option("--bind", type=HostPort(allow_zero=True), default=None, metavar="HOST:PORT",
              help="Host and port at once (instead of --host and --port).")
@click.option("--udp/--no-udp", default=True, show_default=True, help="Serve UDP.")
@click.option("--tcp/--no-tcp", default=True, show_default=True, help="Serve TCP.")
@click.option("--tcp-framing", type=click.Choice(FRAMINGS), default="line",
              help="'line': one request per line; 'raw': the tutorial's lock-step chunks; "
                   "'len16': each message after its length in 2 bytes, network order "
                   "(DNS over TCP's framing: no welcome, no exit).  [default: the app's "
                   "(dns: len16), else line]")
@click.option("--max-request", default=_defaults.max_request, show_default=True,
              type=click.IntRange(1, 65507), help="Largest request in bytes.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log one line per request.")
@click.option("--handler-timeout", default=_defaults.handler_timeout, show_default=True,
              type=click.FloatRange(min=0), metavar="SECONDS",
              help="Longest an async handler's call may take; then it counts as "
                   "handler_timeouts (TCP: 'error: handler timed out'). 0: no limit.")
@click.option("--max-pending", default=_defaults.max_pending, show_default=True,
              type=click.IntRange(min=1), metavar="N",
              help="Async handler calls running at once per transport; beyond it a request "
                   "is dropped as dropped_overload (TCP: 'error: overloaded').")
@click.option("--max-pending-per-source", default=_defaults.max_pending_per_source,
              show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Async handler calls running at once for one source (its /32 or /64).")
@click.option("--handler-threads", default=_defaults.handler_threads, show_default=True,
              type=click.IntRange(min=0), metavar="N",
              help="Run a sync handler on N threads, so one that blocks (sleep, disk, a "
                   "database) does not stop every client; it must be thread-safe. 0: on "
                   "the event loop (fastest).")
@click.option("--stall-warning", default=_defaults.stall_warning, show_default=True,
              type=click.FloatRange(min=0), metavar="SECONDS",
              help="Log what blocks the event loop when it has not run for this long; "
                   "0: off.")
@click.option("--graceful-timeout", default=_defaults.graceful_timeout, show_default=True,
              type=click.FloatRange(0), help="Seconds to finish in-flight work on shutdown.")
@click.option("--rate-limit", default=str(_defaults.rate_limit), show_default=True,
              help="Requests/s per source prefix, both transports, or 'off'.")
@click.option("--rate-burst", type=click.FloatRange(min=1), default=None,
              help="Burst a quiet source may send [default: 2 x rate limit].")
@click.option("--ipv4-prefix", default=_defaults.ipv4_prefix, show_default=True,
              type=click.IntRange(0, 32), help="IPv4 prefix length that shares a limit.")
@click.option("--ipv6-prefix", default=_defaults.ipv6_prefix, show_default=True,
              type=click.IntRange(0, 128), help="IPv6 prefix length that shares a limit.")
@click.option("--allow", multiple=True, metavar="CIDR",
              help="Serve only these networks (repeat or comma-separate).")
@click.option("--deny", multiple=True, metavar="CIDR", help="Never serve these networks.")
@click.option("--limit-exempt", multiple=True, metavar="CIDR",
              default=_defaults.limit_exempt, show_default=True,
              help="Networks exempt from rate and per-source limits ('none' for no exemption).")
@click.option("--max-amplification", default=str(_defaults.max_amplification),
              help="Drop UDP replies larger than K times their request, or 'off'.  "
                   f"[default: the app's (dns: off), else {_defaults.max_amplification:g}]")
@click.option("--tcp-max-connections", default=_defaults.tcp_max_connections, show_default=True,
              type=click.IntRange(min=1), help="Open TCP connections at most.")
@click.option("--tcp-max-per-source", default=_defaults.tcp_max_per_source, show_default=True,
              type=click.IntRange(min=1), help="Open TCP connections per source at most.")
@click.option("--tcp-idle-timeout", default=_defaults.tcp_idle_timeout, show_default=True,
              type=click.FloatRange(min=0.001), help="Close after this long without a request.")
@click.option("--tcp-line-timeout", default=_defaults.tcp_line_timeout, show_default=True,
              type=click.FloatRange(min=0.001), help="Close if a started line takes longer.")
@click.option("--tcp-write-timeout", default=_defaults.tcp_write_timeout, show_default=True,
              type=click.FloatRange(min=0.001),
              help="Close if the client does not read its replies for this long.")
@click.option("--metrics", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--worker-timeout", default=10.0, show_default=True,
              type=click.FloatRange(min=2.0), metavar="SECONDS",
              help="With --workers: a worker silent this long (stopped, stuck) is killed "
                   "and restarted.")
@click.option("--workers", metavar="N|auto", default=None,
              help="Run N server processes on the port (SO_REUSEPORT) under a supervisor "
                   "that restarts them; 'auto': one per CPU.  [default: one process]")
@click.option("--proxy-protocol/--no-proxy-protocol", default=False, show_default=True,
              help="TCP: expect a PROXY protocol v1/v2 header from --proxy-trusted peers.")
@click.option("--proxy-trusted", multiple=True, metavar="CIDR",
              help="Load balancers allowed to send the PROXY header (repeat or "
                   "comma-separate); required with --proxy-protocol ('any': every peer "
                   "must send it, and so may choose its source).")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]),
              default="auto", show_default=True,
              help="Event loop; 'auto' takes uvloop when installed (udpkit[fast]).")
@click.option("--busy-poll", default="off", show_default=True, metavar="DURATION|off",
              help="After a UDP wake-up that found work, keep polling the socket for this "
                   "long (e.g. 50us) past the last datagram before sleeping again: lower "
                   "latency for a core spent while requests keep coming (0 when idle).")
@click.option("--fast-path/--no-fast-path", default=True, show_default=True,
              help="Serve UDP, and TCP lines, with the C extension when it is built "
                   "(sync handlers).")
@click.option("--app-dir", default=".", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory added to the import path to find APP's module.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
              help=LOG_LEVEL_HELP)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=LOG_FORMAT_HELP)
@_app_options
def serve(
    app: str,
    host: str,
    port: int,
    bind: tuple[str, int] | None,
    udp: bool,
    tcp: bool,
    tcp_framing: str,
    max_request: int,
    access_log: bool,
    graceful_timeout: float,
    handler_timeout: float,
    max_pending: int,
    max_pending_per_source: int,
    handler_threads: int,
    stall_warning: float,
    rate_limit: str,
    rate_burst: float | None,
    ipv4_prefix: int,
    ipv6_prefix: int,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    limit_exempt: tuple[str, ...],
    max_amplification: str,
    tcp_max_connections: int,
    tcp_max_per_source: int,
    tcp_idle_timeout: float,
    tcp_line_timeout: float,
    tcp_write_timeout: float,
    metrics: str | None,
    loop: str,
    fast_path: bool,
    busy_poll: str,
    workers: str | None,
    worker_timeout: float,
    proxy_protocol: bool,
    proxy_trusted: tuple[str, ...],
    app_dir: str,
    log_level: str,
    log_format: str,
    **app_options: str | None,
) -> None:
    if bind is not None:
        host, port = _address(bind, host, port)
    configure(getattr(logging, log_level.upper()), fmt=log_format)
    sys.path.insert(0, os.path.abspath(app_dir))
    settings = _given(dict(
        app=app,
        app_options={name.replace("_", "-"): value for name, value in app_options.items()
                     if value is not None},
        host=host,
        port=port,
        udp=udp,
        tcp=tcp,
        tcp_framing=framing_name(tcp_framing),
        max_request=max_request,
        access_log=access_log,
        graceful_timeout=graceful_timeout,
        handler_timeout=handler_timeout,
        max_pending=max_pending,
        max_pending_per_source=max_pending_per_source,
        handler_threads=handler_threads,
        stall_warning=stall_warning,
        rate_limit=_optional_float(rate_limit, "--rate-limit"),
        rate_burst=rate_burst,
        ipv4_prefix=ipv4_prefix,
        ipv6_prefix=ipv6_prefix,
        allow=allow,
        deny=deny,
        limit_exempt=tuple(n for n in limit_exempt if n.lower() != "none"),
        max_amplification=_optional_float(max_amplification, "--max-amplification"),
        tcp_max_connections=tcp_max_connections,
        tcp_max_per_source=tcp_max_per_source,
        tcp_idle_timeout=tcp_idle_timeout,
        tcp_line_timeout=tcp_line_timeout,
        tcp_write_timeout=tcp_write_timeout,
        metrics=parse_host_port(metrics) if metrics else None,
        loop="uvloop" if loop == "uvloop" else "asyncio" if loop == "asyncio" else "auto",
        fast_path=fast_path,
        busy_poll=_busy_poll(busy_poll),
        proxy_protocol=proxy_protocol,
        proxy_trusted=proxy_trusted,
    ), computed=("host", "port") if bind is not None else ())
    config = ServerConfig(**settings)
    processes = _workers(workers)
    if processes is not None:
        code = serve_workers(
            config, workers=processes, log=(getattr(logging, log_level.upper()), log_format),
            hung_after=worker_timeout,
        )
        if code:
            sys.exit(code)
        return
    run_server(config)
