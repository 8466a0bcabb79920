"""``udpkit ping``: probe a service like ping(8) (calls :func:`udpkit.bench.probe.ping_async`).

Exit 0 when any reply came, 1 when none did (or the port refused), 2 on bad
usage (one line, no traceback: :mod:`udpkit.cli.errors`).  Ctrl-C prints the
summary.  ``--json`` prints one object per event and the summary as the last.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import click

from udpkit.apps import DEFAULT_APP, default_payload, default_tcp_framing, rule_names
from udpkit.bench.probe import PingEvent, PingStart, ping_async
from udpkit.bench.stream import PING_START, SUMMARY, event_record
from udpkit.cli.errors import FAILED, UdpkitCommand
from udpkit.cli.params import DEFAULT_TARGET, Target
from udpkit.core.errors import UsageError
from udpkit.core.framing import FRAMINGS, framing_name
from udpkit.core.handler import format_address
from udpkit.core.probe_stats import ProbeSummary


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
        lines.append(
            f"rtt p50/p90/p99 = {summary.rtt_p50 * 1000:.3f}/{summary.rtt_p90 * 1000:.3f}/"
            f"{summary.rtt_p99 * 1000:.3f} ms"
        )
    return lines


def _event_record(event: PingEvent, where: str) -> dict[str, Any]:
    return {
        "from": where, "seq": event.seq, "bytes": event.size,
        "rtt_ms": round(event.rtt * 1000, 3) if event.kind in _TIMED else None,
        "out_of_order": event.out_of_order,
    }


_TIMED = frozenset({"reply", "duplicate", "late"})


def _summary_record(summary: ProbeSummary, where: str) -> dict[str, Any]:
    def ms(seconds: float) -> float | None:
        return round(seconds * 1000, 3) if summary.received else None

    return {
        "to": where, "sent": summary.sent, "received": summary.received,
        "loss_percent": round(summary.loss_percent, 3), "duplicates": summary.duplicates,
        "out_of_order": summary.out_of_order, "late": summary.late, "refused": summary.refused,
        "elapsed_ms": round(summary.elapsed * 1000, 3),
        "rtt_ms": {
            "min": ms(summary.rtt_min), "avg": ms(summary.rtt_avg), "max": ms(summary.rtt_max),
            "mdev": ms(summary.rtt_mdev), "p50": ms(summary.rtt_p50),
            "p90": ms(summary.rtt_p90), "p99": ms(summary.rtt_p99),
        },
        "jitter_ms": ms(summary.jitter),
    }


@click.command(cls=UdpkitCommand)
@click.argument("target", type=Target(), default=DEFAULT_TARGET, required=False)
@click.option("--tcp", is_flag=True, help="Probe over TCP (one probe per line).")
@click.option("--tcp-framing", "framing", type=click.Choice(FRAMINGS), default=None,
              help="TCP framing of the server (len16: a 2-byte length before each probe) "
                   "[default: line; --expect dns: len16].")
@click.option("-c", "--count", type=click.IntRange(min=1), default=None,
              help="Stop after COUNT probes.")
@click.option("-i", "--interval", default=1.0, show_default=True, type=float,
              help="Seconds between probes.")
@click.option("--timeout", default=1.0, show_default=True, type=float,
              help="Seconds to wait for each reply.")
@click.option("--payload", "template", default=None,
              help="Payload template; {seq} is the probe's number [default: 'ping {seq}'; "
                   "--expect dns: the query '. NS', or 'name TYPE'].")
@click.option("--expect", default=DEFAULT_APP, show_default=True,
              help=f"Reply rule: {', '.join(rule_names(numbering=True))}, or a regex with {{seq}}.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: each event, then the summary.")
@click.option("--json-stream", "as_stream", is_flag=True,
              help="JSON Lines with a 'type' each (the schema of bench --json-stream): "
                   "start, one per probe's outcome, then the summary.")
def ping(
    target: tuple[str, int],
    tcp: bool,
    framing: str | None,
    count: int | None,
    interval: float,
    timeout: float,
    template: str | None,
    expect: str,
    as_json: bool,
    as_stream: bool,
) -> None:
    """Send numbered probes to TARGET ([HOST][:PORT], default 127.0.0.1:9999) and
    report each reply, like ping(8)."""
    if as_json and as_stream:
        raise UsageError("--json and --json-stream: choose one")
    host, port = target
    if template is None:
        template = default_payload(expect, "ping {seq}")
    if framing is None:
        framing = default_tcp_framing(expect)
    named = format_address(target)
    where = named
    stop: asyncio.Event | None = None
    output_closed = False

    def record(kind: str, fields: dict[str, Any]) -> str:
        """A JSON line: ``--json``'s ``event`` key, or the stream's ``type``."""
        if as_stream:
            return json.dumps(event_record(kind, fields))
        return json.dumps({"event": kind, **fields})

    def emit(text: str) -> None:
        """Print a line; a closed stdout (``| head``) ends the run instead of raising
        inside the event loop's callback."""
        nonlocal output_closed
        if output_closed:
            return
        try:
            click.echo(text)
        except BrokenPipeError:
            output_closed = True
            if stop is not None:
                stop.set()

    def on_start(start: PingStart) -> None:
        nonlocal where
        where = format_address(start.server)
        if as_json or as_stream:
            emit(record(PING_START, {
                "to": named, "address": where,
                "transport": start.transport, "payload_bytes": start.payload_size,
            }))
            return
        emit(f"PING {named} ({where}) over {start.transport}: "
             f"{start.payload_size} bytes of payload")

    def on_event(event: PingEvent) -> None:
        if as_json or as_stream:
            emit(record(event.kind, _event_record(event, where)))
        else:
            emit(_line(event, where))

    async def main() -> ProbeSummary:
        nonlocal stop
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            return await ping_async(
                host, port, transport="tcp" if tcp else "udp", count=count, interval=interval,
                timeout=timeout, template=template, expect=expect, on_start=on_start,
                on_event=on_event, stop=stop, framing=framing_name(framing),
            )
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    summary = asyncio.run(main())
    if output_closed:
        raise BrokenPipeError  # the one path: quiet, exit 141
    if as_json or as_stream:
        emit(record(SUMMARY, _summary_record(summary, where)))
        if output_closed:
            raise BrokenPipeError
    else:
        click.echo("")
        for line in _summary(summary, where):
            click.echo(line)
    sys.exit(0 if summary.received else FAILED)
