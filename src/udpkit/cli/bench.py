"""``udpkit bench``: load-test a service (calls :func:`udpkit.bench.run_config`).

Exit 0 when any reply came, 1 when none did or the port refused, 3 when a
``--slo`` threshold failed, 4 under ``--strict`` when the generator's own send
lag spoils the figures, 2 on bad usage (one line, no traceback:
:mod:`udpkit.cli.errors`), 130 when Ctrl-C stopped the run: during the
warm-up nothing is printed but that line; later the partial table, marked
INTERRUPTED.  Every argument, output paths included, is checked before any request is sent.
"""

from __future__ import annotations

import sys

import click

from udpkit.apps import DEFAULT_APP, default_payload, default_tcp_framing, rule_names
from udpkit.bench.config import BenchConfig
from udpkit.cli.bench_merge import merge
from udpkit.cli.errors import (
    IMPRECISE,
    INTERRUPTED,
    Failure,
    UdpkitCommand,
    check_run,
    with_slos,
)
from udpkit.cli.params import DEFAULT_TARGET, Target, check_output_path, read_query_file
from udpkit.core.errors import UsageError
from udpkit.core.framing import framing_name
from udpkit.core.pacing import LAG_FLAG_FRACTION
from udpkit.core.slo import parse_slos


@click.command(cls=UdpkitCommand)
@click.argument("target", type=Target(), default=DEFAULT_TARGET, required=False)
@click.option("--tcp", is_flag=True, help="Use TCP (one request per line) instead of UDP.")
@click.option("--tcp-framing", type=click.Choice(["line", "len16"]), default=None,
              help="TCP framing of the server (len16: a 2-byte length before each message) "
                   "[default: line; --expect dns: len16].")
@click.option("--concurrency", default=64, show_default=True, type=int,
              help="Closed loop: requests in flight.")
@click.option("-r", "--rate", type=float, default=None,
              help="Open loop: requests per second (latency from the intended send time).")
@click.option("--poisson", is_flag=True, help="Open loop: Poisson arrivals.")
@click.option("-d", "--duration", type=float, default=None,
              help="Seconds to measure after the warm-up [default: 10 unless --requests].")
@click.option("-n", "--requests", type=int, default=None, help="Measured requests to send.")
@click.option("--warmup", default=1.0, show_default=True, type=float,
              help="Seconds of load before measuring.")
@click.option("--timeout", default=1.0, show_default=True, type=float,
              help="Per-request timeout in seconds: unanswered by then is lost.")
@click.option("--payload", "template", default=None,
              help="Payload template; {seq} is the request's number [default: n{seq}; "
                   "--expect dns: the query '. NS'].")
@click.option("--query-file", type=click.Path(dir_okay=False), default=None,
              help="--expect dns: queries to send in turn, one 'name TYPE' per line "
                   "(dnsperf's format).")
@click.option("--size", default=0, show_default=True, type=int,
              help="Pad payloads with 'x' to this many bytes.")
@click.option("--expect", default=DEFAULT_APP, show_default=True,
              help=f"Reply rule: {', '.join(rule_names(numbering=True))}, or a regex with {{seq}}.")
@click.option("--connections", default=1, show_default=True, type=int,
              help="TCP: connections.")
@click.option("--depth", type=int, default=None,
              help="TCP: pipelined requests per connection [default: concurrency/connections].")
@click.option("--procs", default=1, show_default=True, type=int,
              help="Generator processes (histograms merged).")
@click.option("--batch", default=64, show_default=True, type=int,
              help="UDP: datagrams per send call (GSO) and read batch.")
@click.option("--gso/--no-gso", default=True, show_default=True,
              help="UDP: send equal-sized payloads with UDP GSO (Linux).")
@click.option("--seed", type=int, default=None, help="Seed of the Poisson arrivals.")
@click.option("--slo", "slos", multiple=True, metavar="THRESHOLD",
              help="Fail (exit 3) unless the run meets this, e.g. 'p99<5ms', 'loss<0.1%', "
                   "'throughput>50000', 'duplicates<=0'; repeatable.")
@click.option("--replay", "replay_path", type=click.Path(dir_okay=False), default=None,
              help="Replay the UDP requests of this pcap/pcapng file (see --speed, "
                   "--replay-port; --expect order by default).")
@click.option("--speed", default="1", show_default=True,
              help="--replay: factor of the recorded pace, or 'max' (--concurrency in flight).")
@click.option("--replay-port", type=click.IntRange(1, 65535), default=None,
              help="--replay: the datagrams sent to this port are the requests "
                   "[default: TARGET's port].")
@click.option("--strict", is_flag=True,
              help="Open loop: fail (exit 4) when the generator's send lag p99 exceeds "
                   f"{LAG_FLAG_FRACTION:.0%} of the latency p50 (its own error would show "
                   "in the figures).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--json-stream", "as_stream", is_flag=True,
              help="JSON Lines as the run goes: one 'interval' object per interval, then "
                   "the 'summary' (what --json prints).")
@click.option("--interval", type=float, default=None,
              help="Seconds per interval of --json-stream and the time series "
                   "[default: 1, or duration/20 for runs under 20 s].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write latency and throughput over time to this PNG (needs matplotlib).")
@click.option("--progress/--no-progress", default=None,
              help="Live progress [default: on a terminal only].")
def bench(
    target: tuple[str, int],
    tcp: bool,
    tcp_framing: str | None,
    concurrency: int,
    rate: float | None,
    poisson: bool,
    duration: float | None,
    requests: int | None,
    warmup: float,
    timeout: float,
    template: str | None,
    query_file: str | None,
    size: int,
    expect: str,
    connections: int,
    depth: int | None,
    procs: int,
    batch: int,
    gso: bool,
    seed: int | None,
    slos: tuple[str, ...],
    replay_path: str | None,
    speed: str,
    replay_port: int | None,
    strict: bool,
    as_json: bool,
    as_stream: bool,
    interval: float | None,
    plot_path: str | None,
    progress: bool | None,
) -> None:
    """Load-test the request/response service at TARGET ([HOST][:PORT], default
    127.0.0.1:9999).

    'udpkit bench merge RESULT.json...' adds up the --json results of runs side by
    side (see 'udpkit bench merge --help')."""
    if replay_path is not None:
        from udpkit.cli.bench_replay import replay_command

        replay_command(click.get_current_context(), path=replay_path, speed=speed,
                       replay_port=replay_port, target=target, expect=expect, timeout=timeout,
                       concurrency=concurrency, requests=requests, slos=slos, as_json=as_json,
                       as_stream=as_stream, interval=interval)
        return
    if speed != "1" or replay_port is not None:
        raise UsageError("--speed and --replay-port need --replay FILE")
    from udpkit.bench.runner import run_config

    host, port = target
    if template is None:
        template = default_payload(expect, "n{seq}")
    if tcp_framing is None:
        tcp_framing = default_tcp_framing(expect)
    queries = read_query_file(query_file) if query_file is not None else None
    config = BenchConfig(
        host=host, port=port, transport="tcp" if tcp else "udp",
        tcp_framing=framing_name(tcp_framing), concurrency=concurrency,
        rate=rate, poisson=poisson, duration=duration, requests=requests, warmup=warmup,
        timeout=timeout, template=template, size=size, expect=expect, queries=queries,
        connections=connections, depth=depth, procs=procs, batch=batch, gso=gso, seed=seed,
        interval=interval,
    ).check()
    thresholds = parse_slos(slos)  # before any load: a typo must not cost a run
    if as_json and as_stream:
        raise UsageError("--json and --json-stream: choose one (the stream ends with the "
                         "--json document)")
    if as_stream and config.procs > 1:
        raise UsageError("--json-stream needs one generator process (drop --procs)")
    if plot_path is not None:
        from udpkit.bench.plot import check_available

        check_available()
        check_output_path(plot_path, "--plot")

    from rich.console import Console

    from udpkit.bench.report import (
        LiveProgress,
        behind_warning,
        generator_warning,
        result_table,
    )

    err_console = Console(stderr=True)
    show_progress = progress if progress is not None else sys.stderr.isatty()
    show_progress = show_progress and config.procs == 1
    from udpkit.cli.bench_output import JsonResult

    output = JsonResult(as_json=as_json, as_stream=as_stream, width=config.interval)
    if show_progress:
        with LiveProgress(err_console) as live:
            result = run_config(config, progress=live.update, handle_signals=True,
                                on_interval=output.on_interval)
    else:
        result = run_config(config, handle_signals=True, on_interval=output.on_interval)

    output.check_reader()
    interrupted = result.summary.interrupted
    if interrupted and result.sent == 0:
        raise Failure("bench", "interrupted during the warm-up: nothing was measured",
                      exit_code=INTERRUPTED)
    outcomes = result.check(thresholds)
    if output.wanted:
        output.emit(with_slos(result.as_dict(), outcomes))
    else:
        Console().print(result_table(result))
        for outcome in outcomes:
            click.echo(outcome.line())
    for warning in (behind_warning(result), generator_warning(result)):
        if warning:
            click.echo(f"udpkit bench: {warning}", err=True)
    if plot_path is not None:
        from udpkit.bench.plot import plot

        plot(result, plot_path)
        if not (as_json or as_stream):
            click.echo(f"plot written to {plot_path}")
    check_run("bench", result, outcomes, measured="measurement")
    if strict and result.generator_flagged:
        raise Failure("bench", "--strict: the generator's send lag p99 "
                      f"({result.send_lag_us['p99']:,} us) spoils the latency p50 "
                      f"({result.percentiles_us['p50']:,} us)", exit_code=IMPRECISE)


bench.subcommands["merge"] = merge  # udpkit bench merge RESULT.json...
