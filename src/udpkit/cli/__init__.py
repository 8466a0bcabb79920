"""The ``udpkit`` command: parse flags, call one library function, exit.

Rule: each sub-command is thin; what it does is a plain function a library
user can call too (``udpkit.serve``, ``udpkit.client.Client``).  The grammar
(targets ``[HOST][:PORT]``, ports, listen addresses) lives in
:mod:`udpkit.cli.params`; every flag ``--some-flag`` of ``udpkit cmd`` has
the environment variable ``UDPKIT_CMD_SOME_FLAG``, and every error takes the
one path of :mod:`udpkit.cli.errors` (one line, exit 2 usage, 1 failed run).
"""

from __future__ import annotations

import click

from udpkit import __version__, _native
from udpkit.cli.audit import audit
from udpkit.cli.bench import bench
from udpkit.cli.errors import UdpkitGroup
from udpkit.cli.ping import ping
from udpkit.cli.proxy import proxy
from udpkit.cli.send import send
from udpkit.cli.serve import serve


@click.group(cls=UdpkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, prog_name="udpkit",
    message="%(prog)s, version %(version)s (C extension: "
    + ("built" if _native.built() else "not built: pure Python")
    + ")",
)
def cli() -> None:
    """Build, run, probe and test request/response services over UDP and TCP.

    Client commands (send, ping, bench, audit) take a target [HOST][:PORT],
    127.0.0.1:9999 by default.  Errors are one line on stderr; exit 2 for a
    command line or configuration that cannot be used, 1 for a run that
    failed, 3 for a bench that missed its --slo, 130 when interrupted.
    """


cli.add_command(serve)
cli.add_command(send)
cli.add_command(ping)
cli.add_command(bench)
cli.add_command(proxy)
cli.add_command(audit)


def main() -> None:
    cli.main(prog_name="udpkit")
