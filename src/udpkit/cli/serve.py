"""``udpkit serve``: run a server (calls :func:`udpkit.server.serve`)."""

from __future__ import annotations

import logging
import os
import sys

import click

from udpkit.core.errors import UsageError
from udpkit.server import ServerConfig
from udpkit.server import serve as run_server
from udpkit.server.logs import configure

_defaults = ServerConfig()


@click.command()
@click.argument("app", default="greeting", required=False)
@click.option("--host", default=_defaults.host, show_default=True,
              help="Address or host name to bind ('::' for IPv6 and IPv4).")
@click.option("--port", default=_defaults.port, show_default=True, type=click.IntRange(0, 65535),
              help="Port for UDP and TCP; 0 picks a free one and prints it.")
@click.option("--udp/--no-udp", default=True, show_default=True, help="Serve UDP.")
@click.option("--tcp/--no-tcp", default=True, show_default=True, help="Serve TCP.")
@click.option("--tcp-framing", type=click.Choice(["line", "raw"]), default="line",
              show_default=True,
              help="'line': one request per line; 'raw': the tutorial's lock-step chunks.")
@click.option("--max-request", default=_defaults.max_request, show_default=True,
              type=click.IntRange(1, 65507), help="Largest request in bytes.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log one line per request.")
@click.option("--graceful-timeout", default=_defaults.graceful_timeout, show_default=True,
              type=click.FloatRange(0), help="Seconds to finish in-flight work on shutdown.")
@click.option("--app-dir", default=".", show_default=True,
              type=click.Path(file_okay=False),
              help="Directory added to the import path to find APP's module.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def serve(
    app: str,
    host: str,
    port: int,
    udp: bool,
    tcp: bool,
    tcp_framing: str,
    max_request: int,
    access_log: bool,
    graceful_timeout: float,
    app_dir: str,
    log_level: str,
) -> None:
    """Serve APP (greeting, echo or module:attr) over UDP and TCP on one port."""
    configure(getattr(logging, log_level.upper()))
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        config = ServerConfig(
            app=app,
            host=host,
            port=port,
            udp=udp,
            tcp=tcp,
            tcp_framing="raw" if tcp_framing == "raw" else "line",
            max_request=max_request,
            access_log=access_log,
            graceful_timeout=graceful_timeout,
        )
        run_server(config)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
