"""``udpkit proxy``: run the impairment proxy (calls :func:`udpkit.proxy.run_proxy`).

Rule: thin.  Each impairment flag (``--loss 0.1``, ``--delay 50ms``) sets that
impairment in both directions; ``--up SPEC`` and ``--down SPEC``
(``key=value,...`` with the same names) then set one direction, so
``--loss 0.1 --down loss=0`` loses only requests.  Values are parsed by the
pure parsers of :mod:`udpkit.core.impairment`, the same the control API uses.
Errors take the one path of :mod:`udpkit.cli.errors` (a malformed flag: one
line on stderr and exit 2).

Without ``--upstream`` it is a Toxiproxy server: the API on ``--control``
(default ``127.0.0.1:8474``, Toxiproxy's), named proxies from ``--config FILE``
(Toxiproxy's ``-config`` list, plus ``protocol`` and ``toxics`` per proxy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from udpkit.cli.errors import UdpkitCommand
from udpkit.cli.params import LOG_FORMAT_HELP, LOG_LEVEL_HELP, LOG_LEVELS, HostPort
from udpkit.core.errors import UsageError
from udpkit.core.impairment import (
    FIELD_PARSERS,
    NO_IMPAIRMENTS,
    Impairments,
    LinkSettings,
    build,
    parse_spec,
)
from udpkit.core.toxiproxy import config_from_text
from udpkit.proxy import ProxyConfig, run_proxy
from udpkit.server.logs import configure

_defaults = ProxyConfig()
TOXIPROXY_CONTROL = ("127.0.0.1", 8474)
"""Toxiproxy's API address, the default of ``--control`` without ``--upstream``."""


class _ImpairmentValue(click.ParamType[str]):
    """A value checked by the impairment's own parser (kept as text)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.name = FIELD_PARSERS[field][1]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        try:
            FIELD_PARSERS[self.field][0](text)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)
        return text


class _Spec(click.ParamType[str]):
    name = "SPEC"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            parse_spec(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


_FLAG_HELP = {
    "loss": "Probability a datagram is lost (0.1 or 10%).",
    "burst_loss": "Gilbert-Elliott burst loss p/r[/loss_bad[/loss_good]], e.g. 0.01/0.3.",
    "delay": "One-way delay, e.g. 50ms (UDP and TCP).",
    "jitter": "Delay varies uniformly by +- this, e.g. 10ms.",
    "duplicate": "Probability a datagram is delivered twice.",
    "reorder": "Probability a datagram is held back so later ones overtake it.",
    "reorder_gap": "How long a reordered datagram is held back (default 20ms).",
    "corrupt": "Probability one bit of a datagram is flipped.",
    "truncate": "Probability a datagram is cut to a random shorter length.",
    "rate": "Bandwidth limit, e.g. 1mbit or 100kB (per second; UDP and TCP).",
    "rate_burst": "Bytes that may pass at once after idling (token bucket depth).",
    "queue_limit": "Bytes of datagrams that may wait for bandwidth before drops (default 64kB).",
    "reset_after": "TCP: reset the connection after this many bytes went this way.",
    "slow_close": "TCP: hold a close back this long, e.g. 1s.",
}


def _impairment_options(func: Any) -> Any:
    for field in reversed(list(FIELD_PARSERS)):
        flag = "--" + field.replace("_", "-")
        func = click.option(flag, field, type=_ImpairmentValue(field), default=None,
                            help=_FLAG_HELP[field] + " Both directions.")(func)
    return func


def build_settings(
    both: dict[str, str | None], up_spec: str | None, down_spec: str | None
) -> LinkSettings:
    """The flags' settings: common values in both directions, then ``--up``/``--down``."""
    common: dict[str, object] = {}
    for field, text in both.items():
        if text is not None:
            common[field] = FIELD_PARSERS[field][0](text)
    base: Impairments = build(NO_IMPAIRMENTS, common)
    up = parse_spec(up_spec, base=base) if up_spec else base
    down = parse_spec(down_spec, base=base) if down_spec else base
    return LinkSettings(up=up, down=down)


@click.command(cls=UdpkitCommand)
@click.option("--listen", type=HostPort(allow_zero=True), default="127.0.0.1:0",
              show_default=True, help="Where to listen (UDP and TCP); port 0 picks a free one.")
@click.option("--upstream", type=HostPort(allow_zero=False), default=None,
              help="The service to forward to (the anonymous proxy of the impairment flags). "
                   "Without it: only named proxies (Toxiproxy's API, --config).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Named proxies to create at start: Toxiproxy's -config JSON list, each "
                   "proxy may add \"protocol\" (tcp, udp, both) and \"toxics\".")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Seed of the decisions (same seed, same traffic: same decisions). "
                   "Default: random, printed.")
@_impairment_options
@click.option("--up", "up_spec", type=_Spec(), default=None,
              help="Client-to-server impairments 'key=value,...' (keys as the flags above), "
                   "over the common ones, e.g. 'loss=0.2,delay=10ms'.")
@click.option("--down", "down_spec", type=_Spec(), default=None,
              help="Server-to-client impairments 'key=value,...', over the common ones.")
@click.option("--control", type=HostPort(allow_zero=True), default=None,
              help="Serve the HTTP control API here: Toxiproxy's API (/proxies, /populate, "
                   "/reset, /metrics...) and, with --upstream, GET /stats, GET/PUT/PATCH "
                   "/impairments; port 0 picks a free one.  Default: off with --upstream, "
                   "127.0.0.1:8474 without.")
@click.option("--udp/--no-udp", default=True, show_default=True, help="Proxy UDP.")
@click.option("--tcp/--no-tcp", default=True, show_default=True, help="Proxy TCP.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.001), default=_defaults.idle_timeout,
              show_default=True, help="Seconds before a silent UDP client's session closes.")
@click.option("--max-sessions", type=click.IntRange(1), default=_defaults.max_sessions,
              show_default=True, help="UDP clients tracked at once (least active evicted).")
@click.option("--pcap", type=click.Path(dir_okay=False), default=None,
              help="Record every datagram and TCP segment forwarded, both ways, to this "
                   "pcap file (tcpdump -r and Wireshark read it).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
              help=LOG_LEVEL_HELP)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help=LOG_FORMAT_HELP)
def proxy(
    listen: tuple[str, int],
    upstream: tuple[str, int] | None,
    config_file: Path | None,
    seed: int | None,
    up_spec: str | None,
    down_spec: str | None,
    control: tuple[str, int] | None,
    udp: bool,
    tcp: bool,
    idle_timeout: float,
    max_sessions: int,
    pcap: str | None,
    log_level: str,
    log_format: str,
    **impairments: str | None,
) -> None:
    """Forward UDP and TCP from --listen to --upstream through a seeded bad network.

    Impairment flags set both directions; --up/--down set one, e.g.
    'udpkit proxy --upstream 127.0.0.1:9999 --loss 10% --delay 50ms --jitter 10ms
    --down loss=0'.  Without --upstream it is a Toxiproxy server ('udpkit proxy
    --config proxies.json'; API on 127.0.0.1:8474).  Ctrl-C (or SIGTERM) prints a
    JSON summary on stdout.
    """
    configure(getattr(logging, log_level.upper()), fmt=log_format)
    settings = build_settings(impairments, up_spec, down_spec)
    if upstream is None and (settings.up.active or settings.down.active):
        raise UsageError("impairment flags and --up/--down need --upstream; named proxies "
                         "take toxics (--config, or the API)")
    proxies = []
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --config {config_file}: {exc}") from None
        proxies = config_from_text(text)
    if upstream is None and control is None:
        control = TOXIPROXY_CONTROL
    config = ProxyConfig(
        host=listen[0],
        port=listen[1],
        upstream_host=upstream[0] if upstream else "127.0.0.1",
        upstream_port=upstream[1] if upstream else None,
        proxies=proxies,
        impairments=settings,
        seed=seed,
        udp=udp,
        tcp=tcp,
        control_host=control[0] if control else "127.0.0.1",
        control_port=control[1] if control else None,
        idle_timeout=idle_timeout,
        max_sessions=max_sessions,
        pcap=pcap,
    )
    run_proxy(config)
