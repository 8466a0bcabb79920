"""The ``udpkit`` command: parse flags, call one library function, exit.

Rule: each sub-command is thin; what it does is a plain function a library
user can call too (``udpkit.serve``, ``udpkit.client.Client``).  Every flag
has an environment variable ``UDPKIT_<COMMAND>_<FLAG>``.  Usage errors exit 2
with one line, no traceback.
"""

from __future__ import annotations

import click

from udpkit import __version__
from udpkit.cli.audit import audit
from udpkit.cli.bench import bench
from udpkit.cli.ping import ping
from udpkit.cli.proxy import proxy
from udpkit.cli.send import send
from udpkit.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="udpkit")
def cli() -> None:
    """Build, run, probe and test request/response services over UDP and TCP."""


cli.add_command(serve)
cli.add_command(send)
cli.add_command(ping)
cli.add_command(bench)
cli.add_command(proxy)
cli.add_command(audit)


def main() -> None:
    cli.main(prog_name="udpkit", auto_envvar_prefix="UDPKIT")
