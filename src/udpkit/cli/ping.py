"""``udpkit ping``: probe a service like ping(8) (calls :func:`udpkit.bench.probe.ping_async`).

Exit 0 when any reply came, 1 when none did (or the port refused), 2 on bad
usage (one line, no traceback).  Ctrl-C prints the summary.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from udpkit.apps import DEFAULT_APP, rule_names
from udpkit.bench.probe import PingEvent, PingStart, ping_async
from udpkit.core.addresses import parse_host_port
from udpkit.core.errors import RequestFailed, UsageError
from udpkit.core.handler import format_address
from udpkit.core.probe_stats import ProbeSummary


def _fail(message: str, code: int) -> None:
    click.echo(f"udpkit ping: {message}", err=True)
    sys.exit(code)


def _line(event: PingEvent, where: str) -> str:
    if event.kind == "timeout":
        return f"no reply from {where}: seq={event.seq} timeout"
    if event.kind == "refused":
        return f"from {where}: seq={event.seq} refused (port unreachable)"
    if event.kind == "wrong":
        return f"{event.size} bytes from {where}: reply matches no probe"
    line = f"{event.size} bytes from {where}: seq={event.seq} time={event.rtt * 1000:.3f} ms"
    if event.kind == "duplicate":
        line += " (DUP!)"
    elif event.kind == "late":
        line += " (late: after its timeout)"
    elif event.out_of_order:
        line += " (out of order)"
    return line


def _summary(summary: ProbeSummary, where: str) -> list[str]:
    lines = [
        f"--- {where} udpkit ping statistics ---",
        f"{summary.sent} probes sent, {summary.received} received, "
        f"{summary.loss_percent:.1f}% loss, {summary.duplicates} duplicates, "
        f"{summary.out_of_order} out of order, time {summary.elapsed * 1000:.0f} ms",
    ]
    extra = []
    if summary.late:
        extra.append(f"{summary.late} late")
    if summary.refused:
        extra.append(f"{summary.refused} refused")
    if extra:
        lines[-1] += ", " + ", ".join(extra)
    if summary.received:
        lines.append(
            f"rtt min/avg/max/mdev = {summary.rtt_min * 1000:.3f}/{summary.rtt_avg * 1000:.3f}/"
            f"{summary.rtt_max * 1000:.3f}/{summary.rtt_mdev * 1000:.3f} ms, "
            f"jitter {summary.jitter * 1000:.3f} ms"
        )
    return lines


@click.command()
@click.argument("target")
@click.option("--tcp", is_flag=True, help="Probe over TCP (one probe per line).")
@click.option("-c", "--count", type=int, default=None, help="Stop after COUNT probes.")
@click.option("-i", "--interval", default=1.0, show_default=True, type=float,
              help="Seconds between probes.")
@click.option("--timeout", default=1.0, show_default=True, type=float,
              help="Seconds to wait for each reply.")
@click.option("--payload", "template", default="ping {seq}", show_default=True,
              help="Payload template; {seq} is the probe's number.")
@click.option("--expect", default=DEFAULT_APP, show_default=True,
              help=f"Reply rule: {', '.join(rule_names(numbering=True))}, or a regex with {{seq}}.")
def ping(
    target: str,
    tcp: bool,
    count: int | None,
    interval: float,
    timeout: float,
    template: str,
    expect: str,
) -> None:
    """Send numbered probes to TARGET (HOST:PORT) and report each reply, like ping(8)."""
    where = target

    def on_start(start: PingStart) -> None:
        nonlocal where
        where = format_address(start.server)
        click.echo(
            f"PING {target} ({where}) over {start.transport}: "
            f"{start.payload_size} bytes of payload"
        )

    def on_event(event: PingEvent) -> None:
        click.echo(_line(event, where))

    async def main() -> ProbeSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            return await ping_async(
                host, port, transport="tcp" if tcp else "udp", count=count, interval=interval,
                timeout=timeout, template=template, expect=expect, on_start=on_start,
                on_event=on_event, stop=stop,
            )
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        host, port = parse_host_port(target, allow_zero=False)
        summary = asyncio.run(main())
    except UsageError as exc:
        _fail(str(exc), 2)
        return
    except RequestFailed as exc:
        _fail(f"{exc.cause}: {exc.message}" + (f" ({exc.address})" if exc.address else ""), 1)
        return
    click.echo("")
    for line in _summary(summary, where):
        click.echo(line)
    sys.exit(0 if summary.received else 1)
