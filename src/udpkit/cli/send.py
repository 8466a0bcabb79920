"""``udpkit send``: send names, print replies (calls :class:`udpkit.Client`).

Rule: every name given on the command line is checked before anything is sent
(a blank name, or ``exit`` over TCP with line or raw framing, gets no reply:
refused at once); names
read from stdin are checked as they come.  Errors take the one path of
:mod:`udpkit.cli.errors`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import click

from udpkit.apps import DEFAULT_APP, rule_names
from udpkit.cli.errors import FAILED, Failure, UdpkitCommand, request_failed
from udpkit.cli.params import DEFAULT_TARGET, Port, Target
from udpkit.client import Client
from udpkit.core.errors import LocalProtocolError, RequestFailed
from udpkit.core.framing import FRAMINGS, framing_name, make_framing


def _refusal(payload: bytes, exit_message: bytes | None, where: str) -> str | None:
    """Why ``payload`` cannot be sent, or ``None`` (``exit_message``: what closes the
    connection, over TCP with a framing that has one)."""
    if not payload.strip():
        return f"{where} is blank: an empty request gets no reply"
    if payload == exit_message:
        return f"{where} is 'exit': over TCP it closes the connection and gets no reply"
    return None


def _payloads(names: tuple[str, ...], exit_message: bytes | None) -> Iterator[bytes]:
    for name in names:
        if name == "-":
            for number, line in enumerate(sys.stdin.buffer, 1):
                payload = line.rstrip(b"\r\n")
                refusal = _refusal(payload, exit_message, f"line {number} of stdin")
                if refusal:
                    raise Failure("send", refusal)
                yield payload
        else:
            yield name.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


@click.command(cls=UdpkitCommand)
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "target", type=Target(), default=DEFAULT_TARGET, metavar="[HOST][:PORT]",
              show_default=True, help="The server.")
@click.option("--host", default=None,
              help="The server's address or host name (overrides --to's host).")
@click.option("--port", type=Port(allow_zero=False), default=None,
              help="The server's port (overrides --to's port).")
@click.option("--tcp", is_flag=True, help="Use TCP instead of UDP.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Overall deadline of each request in seconds, retries included.")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, 100),
              help="Retransmissions (UDP) or reconnections (TCP) within the deadline.")
@click.option("--expect", type=click.Choice(rule_names()), default=DEFAULT_APP,
              show_default=True, help="Which reply answers a request.")
@click.option("--tcp-framing", "--framing", "framing", type=click.Choice(FRAMINGS),
              default="line", show_default=True,
              help="TCP framing of the server (len16: a 2-byte length before each message).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per request.")
def send(
    names: tuple[str, ...],
    target: tuple[str, int],
    host: str | None,
    port: int | None,
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
    framing_used = framing_name(framing)
    exit_message = make_framing(framing_used, max_line=1).exit if tcp else None
    for name in names:
        refusal = _refusal(
            name.encode("utf-8", "surrogateescape"), exit_message, f"name {name!r}"
        )
        if name != "-" and refusal:
            raise Failure("send", refusal)
    out = sys.stdout.buffer
    failures = 0
    client = Client(
        host if host is not None else target[0],
        port if port is not None else target[1],
        transport="tcp" if tcp else "udp",
        timeout=timeout,
        retries=retries,
        matcher=expect,
        framing=framing_used,
    )
    with client:
        for payload in _payloads(names, exit_message):
            try:
                answer = client.exchange(payload)
            except LocalProtocolError as exc:
                raise Failure("send", f"{_text(payload)!r}: {exc}") from None
            except RequestFailed as exc:
                failures += 1
                _, hint = request_failed(exc)
                line = f"udpkit send: {_text(payload)!r}: {exc}" + (f" ({hint})" if hint else "")
                click.echo(line, err=True)
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
    if failures:
        sys.exit(FAILED)
