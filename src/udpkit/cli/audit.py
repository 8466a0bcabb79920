"""``udpkit audit``: probe any UDP service for amplification and rate limits
(calls :func:`udpkit.audit.audit_async`).

Exit 0 with the report (whatever the verdicts), 1 when the port refused
(ICMP port unreachable), 2 on bad usage (one line, no traceback:
:mod:`udpkit.cli.errors`).  The tool
may be pointed at any host: only audit services you are allowed to load.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import click

from udpkit.audit.config import AuditConfig, parse_rates, parse_sizes
from udpkit.audit.prober import audit_async
from udpkit.audit.text import render_text
from udpkit.cli.errors import UdpkitCommand
from udpkit.cli.params import DEFAULT_TARGET, Target


def _config(target: tuple[str, int], quick: bool, options: dict[str, Any]) -> AuditConfig:
    host, port = target
    base = AuditConfig.quick() if quick else AuditConfig()
    changes: dict[str, Any] = {key: value for key, value in options.items() if value is not None}
    if "sizes" in changes:
        changes["sizes"] = parse_sizes(changes["sizes"])
    if "oversize" in changes:
        changes["oversize"] = parse_sizes(changes["oversize"], option="--oversize")
    if "rates" in changes:
        changes["rates"] = parse_rates(changes["rates"])
    return replace(base, host=host, port=port, **changes).check()


@click.command(cls=UdpkitCommand)
@click.argument("target", type=Target(), default=DEFAULT_TARGET, required=False)
@click.option("--quick", is_flag=True,
              help="Fewer sizes, probes and ramp steps: a run under 5 seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--sizes", default=None,
              help="Request sizes of the sweep, comma-separated bytes "
                   "[default: 0,1,2,4,...,1024,1472,1500].")
@click.option("--probes", type=int, default=None, help="Requests per size [default: 3].")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for the replies of each size [default: 0.25].")
@click.option("--no-empty", "empty", flag_value=False, default=None,
              help="Do not send empty datagrams.")
@click.option("--oversize", default=None,
              help="Oversized datagram sizes, comma-separated [default: 1500,9000,65507].")
@click.option("--rates", default=None,
              help="Requests/s of the rate ramp's steps, rising; '' skips the ramp "
                   "[default: 100,1000,5000,20000].")
@click.option("--step-duration", type=float, default=None,
              help="Seconds each ramp step sends for [default: 0.6].")
@click.option("--ramp-size", type=int, default=None,
              help="Bytes of each ramp request [default: smallest answered size >= 8].")
@click.option("--threshold", type=float, default=None,
              help="A ramp step answering less than this fraction is limited [default: 0.9].")
@click.option("--max-time", type=float, default=None,
              help="Seconds the whole run may take [default: 15, --quick 5].")
def audit(target: tuple[str, int], quick: bool, as_json: bool, **options: Any) -> None:
    """Audit the UDP service at TARGET ([HOST][:PORT], default 127.0.0.1:9999):
    amplification per request size, empty and oversized datagrams, the rate
    where one source is limited, and how it compares with RFC 8085 and RFC 9000
    section 8.1.

    Point it only at services you are allowed to load: the ramp sends up to
    20,000 requests per second.
    """
    config = _config(target, quick, options)
    report = asyncio.run(audit_async(config))
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(render_text(report))
