"""``udpkit send``: send names, print replies (calls :class:`udpkit.Client`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import click

from udpkit.apps import DEFAULT_APP, rule_names
from udpkit.client import Client
from udpkit.core.errors import LocalProtocolError, RequestFailed, UsageError


def _payloads(names: tuple[str, ...]) -> Iterator[bytes]:
    for name in names:
        if name == "-":
            for line in sys.stdin.buffer:
                yield line.rstrip(b"\r\n")
        else:
            yield name.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9999, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tcp", is_flag=True, help="Use TCP instead of UDP.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Overall deadline of each request in seconds, retries included.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Retransmissions (UDP) or reconnections (TCP) within the deadline.")
@click.option("--expect", type=click.Choice(rule_names()), default=DEFAULT_APP,
              show_default=True, help="Which reply answers a request.")
@click.option("--framing", type=click.Choice(["line", "raw"]), default="line", show_default=True,
              help="TCP framing of the server.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per request.")
def send(
    names: tuple[str, ...],
    host: str,
    port: int,
    tcp: bool,
    timeout: float,
    retries: int,
    expect: str,
    framing: str,
    as_json: bool,
) -> None:
    """Send each NAME as a request and print its reply ('-' reads names from stdin).

    Exit 0 when every request was answered, 1 when any was not, 2 on bad usage.
    """
    transport = "tcp" if tcp else "udp"
    out = sys.stdout.buffer
    failures = 0
    try:
        client = Client(
            host,
            port,
            transport="tcp" if tcp else "udp",
            timeout=timeout,
            retries=retries,
            matcher=expect,
            framing="raw" if framing == "raw" else "line",
        )
        with client:
            for payload in _payloads(names):
                try:
                    answer = client.exchange(payload)
                except RequestFailed as exc:
                    failures += 1
                    click.echo(f"udpkit send: {_text(payload)!r}: {exc}", err=True)
                    if as_json:
                        record = {
                            "payload": _text(payload), "reply": None, "transport": transport,
                            "attempts": exc.attempts, "rtt_ms": None,
                            "error": exc.cause, "elapsed_ms": round(exc.elapsed * 1000, 3),
                        }
                        out.write(json.dumps(record).encode() + b"\n")
                        out.flush()
                    continue
                if as_json:
                    record = {
                        "payload": _text(payload), "reply": _text(answer.reply),
                        "rtt_ms": round(answer.elapsed * 1000, 3),
                        "attempts": answer.attempts, "transport": transport,
                    }
                    out.write(json.dumps(record).encode() + b"\n")
                else:
                    reply = answer.reply
                    out.write(reply if reply.endswith(b"\n") else reply + b"\n")
                out.flush()
    except (UsageError, LocalProtocolError) as exc:
        raise click.UsageError(str(exc)) from None
    if failures:
        sys.exit(1)
