"""``udpkit bench merge RESULT...``: one report out of the ``--json`` results of runs
side by side (calls :func:`udpkit.bench.merge.merge_files`).

Reached as ``udpkit bench merge`` (``merge`` as the first argument of ``bench`` names
this command; a host called ``merge`` is written ``merge:PORT``).  Exit codes as
``bench``: 0, 1 when no reply came in any run, 2 when the files cannot be read or
the runs cannot be added up (one line saying why), 3 when a ``--slo`` fails.
"""

from __future__ import annotations

import json

import click

from udpkit.cli.errors import UdpkitCommand, check_run, with_slos
from udpkit.core.slo import parse_slos

NAME = "bench merge"


@click.command(NAME, cls=UdpkitCommand)
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...",
                type=click.Path(dir_okay=False))
@click.option("--slo", "slos", multiple=True, metavar="THRESHOLD",
              help="Fail (exit 3) unless the merged run meets this, as in 'udpkit bench'.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged result as JSON.")
def merge(results: tuple[str, ...], slos: tuple[str, ...], as_json: bool) -> None:
    """Add up the results (udpkit bench --json) of runs that loaded the same service at
    the same time from several generators or hosts: counts summed, histograms merged,
    percentiles recomputed exactly."""
    from udpkit.bench.merge import merge_files

    thresholds = parse_slos(slos)
    result = merge_files(results)
    outcomes = result.check(thresholds)
    if as_json:
        document = result.as_dict()
        document["merged_from"] = list(results)
        click.echo(json.dumps(with_slos(document, outcomes)))
    else:
        from rich.console import Console

        from udpkit.bench.report import result_table

        Console().print(result_table(result))
        click.echo(f"merged {len(results)} runs: {', '.join(results)}")
        for outcome in outcomes:
            click.echo(outcome.line())
    from udpkit.bench.report import behind_warning, generator_warning

    for warning in (behind_warning(result), generator_warning(result)):
        if warning:
            click.echo(f"udpkit {NAME}: {warning}", err=True)
    check_run(NAME, result, outcomes)
