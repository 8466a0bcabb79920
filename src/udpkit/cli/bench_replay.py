"""``udpkit bench --replay FILE``: the replay branch of ``udpkit bench``.

Rule: the same exits and outputs as any bench run (:mod:`udpkit.cli.bench`):
1 when no reply came, 2 for a capture file that cannot be read (one line,
:class:`~udpkit.capture.CaptureError`), 3 when a ``--slo`` fails, 130 when
interrupted.  Flags that shape generated load (``--rate``, ``--tcp``,
``--payload``...) mean nothing for a replay and are refused; the file is read
and checked before any socket opens.  ``--json-stream`` writes the replay's
intervals as they close, then its ``--json`` document (:mod:`udpkit.bench.stream`).
"""

from __future__ import annotations

import math

import click

from udpkit.cli.errors import check_run, with_slos

NOT_FOR_REPLAY = ("tcp", "rate", "poisson", "duration", "warmup", "template", "size",
                  "connections", "depth", "procs", "batch", "gso", "seed", "plot_path",
                  "tcp_framing", "strict")
"""``bench`` parameters a replay refuses when given."""


def replay_command(ctx: click.Context, *, path: str, speed: str, replay_port: int | None,
                   target: tuple[str, int], expect: str, timeout: float, concurrency: int,
                   requests: int | None, slos: tuple[str, ...], as_json: bool,
                   as_stream: bool = False, interval: float | None = None) -> None:
    """Run a replay for ``udpkit bench --replay`` and report it."""
    from click.core import ParameterSource

    from udpkit.bench.replay import ORDER, ReplayConfig, load, parse_speed, replay_async
    from udpkit.core.errors import UsageError
    from udpkit.core.handler import format_address
    from udpkit.core.slo import parse_slos

    for name in NOT_FOR_REPLAY:
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            opts = next(p.opts for p in ctx.command.params if p.name == name)
            flag = max(opts, key=len)
            raise UsageError(f"{flag} cannot be used with --replay (the capture gives the "
                             "payloads and the pace)")
    if ctx.get_parameter_source("expect") == ParameterSource.DEFAULT:
        expect = ORDER
    if as_json and as_stream:
        raise UsageError("--json and --json-stream: choose one (the stream ends with the "
                         "--json document)")
    if interval is not None and not (interval > 0 and math.isfinite(interval)):
        raise UsageError(f"--interval must be a positive number of seconds (got {interval})")
    host, port = target
    config = ReplayConfig(path=path, host=host, port=port, replay_port=replay_port,
                          speed=parse_speed(speed), expect=expect, timeout=timeout,
                          concurrency=concurrency, requests=requests,
                          **({"interval": interval} if interval is not None else {})).check()
    thresholds = parse_slos(slos)
    plan, source = load(config)

    import asyncio

    from rich.console import Console

    from udpkit.bench.report import result_table
    from udpkit.cli.bench_output import JsonResult

    output = JsonResult(as_json=as_json, as_stream=as_stream, width=config.interval)

    def header() -> None:
        if as_json or as_stream:
            return
        if config.speed is None:
            pace = f"as fast as --concurrency {config.concurrency} allows"
        else:
            pace = ("at the recorded pace" if config.speed == 1
                    else f"at {config.speed:g}x the recorded pace")
        click.echo(source.line())
        click.echo(f"replayed against {format_address((host, port))} {pace}, replies matched "
                   f"by --expect {config.expect}")

    # The header says the replay is under way, so it comes once Ctrl-C is handled.
    replayed = asyncio.run(replay_async(config, plan, source, handle_signals=True,
                                        on_start=header, on_interval=output.on_interval))
    output.check_reader()
    result = replayed.result
    interrupted = result.summary.interrupted
    outcomes = result.check(thresholds)
    if output.wanted:
        output.emit(with_slos(replayed.as_dict(), outcomes))
    else:
        table = result_table(result)
        table.title = "udpkit bench --replay" + (" INTERRUPTED: partial figures"
                                                 if interrupted else "")
        if config.speed is not None:
            table.add_row("latency measured from", "intended send time")
            table.add_row("late sends (> 2 ms)", f"{result.summary.late_sends:,}")
        Console().print(table)
        for outcome in outcomes:
            click.echo(outcome.line())
    if replayed.fell_behind:
        click.echo(f"udpkit bench: warning: the replay fell behind the recorded pace: "
                   f"{result.summary.late_sends:,} of {result.sent:,} requests left more than "
                   f"2 ms late (worst {result.summary.max_send_lag * 1000:.1f} ms)", err=True)
    check_run("bench", result, outcomes, measured="replay")
