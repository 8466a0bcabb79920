"""What a person sees of a bench run: live progress on a terminal, the final table.

Rule: presentation only (``rich``, imported by the command line, never by
``import udpkit``); every figure comes from a :class:`BenchResult` or a
:class:`BenchProgress`.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from udpkit.bench.result import PERCENTILES, BenchResult
from udpkit.bench.runner import BenchProgress
from udpkit.core.handler import format_address
from udpkit.core.pacing import LAG_FLAG_FRACTION


class LiveProgress:
    """A progress bar with elapsed time, rate reached and loss so far (on a TTY)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> LiveProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task("starting", total=None, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, view: BenchProgress) -> None:
        if self._task is None:
            return
        done = view.received + view.lost
        loss = 100.0 * view.lost / done if done else 0.0
        status = (
            f"{view.rate:,.0f} replies/s  sent {view.sent:,}  received {view.received:,}  "
            f"lost {view.lost:,} ({loss:.2f}%)  in flight {view.in_flight:,}"
        )
        self._progress.update(
            self._task,
            description="warm-up" if view.warming_up else "measuring",
            total=view.planned,
            completed=min(view.elapsed, view.planned) if view.planned else view.elapsed,
            status=status,
        )


def _ms(micros: float) -> str:
    return f"{micros / 1000.0:.3f}"


def result_table(result: BenchResult) -> Table:
    """The final table of a run."""
    config = result.config
    mode = (
        f"open loop, {config.rate:,.0f}/s {'Poisson' if config.poisson else 'constant'}"
        if config.rate is not None
        else (f"closed loop, {config.connections} connection(s) x depth {config.depth}"
              if config.transport == "tcp" else f"closed loop, concurrency {config.concurrency}")
    )
    title = (
        f"udpkit bench {format_address((config.host, config.port))} over "
        f"{config.transport} ({mode}"
        + (f", {result.processes} processes" if result.processes > 1 else "")
        + ")"
        + (" INTERRUPTED: partial figures" if result.summary.interrupted else "")
    )
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("duration", f"{result.duration:.3f} s"),
        ("throughput", f"{result.throughput:,.0f} replies/s"),
        ("sent", f"{result.sent:,}"),
        ("received", f"{result.received:,}"),
        ("lost (timed out)", f"{result.lost:,} ({100 * result.loss:.3f}%)"),
        ("duplicates", f"{result.duplicates:,}"),
        ("reordered", f"{result.reordered:,}"),
        ("late (after timeout)", f"{result.late:,}"),
        ("wrong replies", f"{result.wrong:,}"),
    ]
    for name, _ in PERCENTILES:
        rows.append((f"latency {name}", f"{_ms(result.percentiles_us[name])} ms"))
    rows.append(("latency max", f"{_ms(result.percentiles_us['max'])} ms"))
    if config.rate is not None:
        rows.append(("latency measured from", "intended send time"))
        rows.append(("send rate reached", f"{result.send_rate:,.0f}/s of {config.rate:,.0f}/s"))
        rows.append(("late sends (> 2 ms)", f"{result.summary.late_sends:,}"))
        from udpkit.bench.merge import PACED_BY_JOIN

        senders = {"c": "C sender thread", "python": "event loop timers"}
        paced = " + ".join(senders.get(part, part)
                           for part in result.summary.paced_by.split(PACED_BY_JOIN) if part)
        if paced:
            rows.append(("sends paced by", paced))
        lag = result.send_lag_us
        if lag:
            rows.append(("send lag p50 / p99 / p99.9 / max",
                         f"{lag['p50']:,} / {lag['p99']:,} / {lag['p99.9']:,} / "
                         f"{lag['max']:,} us"))
        read = result.receive_lag_us
        if read:
            rows.append(("arrival-to-read p50 / p99 / max",
                         f"{read['p50']:,} / {read['p99']:,} / {read['max']:,} us"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def generator_warning(result: BenchResult) -> str | None:
    """A line saying the generator's own send lag shows in the latency, or ``None``."""
    if not result.generator_flagged:
        return None
    lag = result.send_lag_us
    return (
        f"warning: the generator's send lag p99 ({lag['p99']:,} us) exceeds "
        f"{LAG_FLAG_FRACTION:.0%} of the latency p50 ({result.percentiles_us['p50']:,} us): "
        "part of what is reported as latency is the generator's own error"
    )


def behind_warning(result: BenchResult) -> str | None:
    """A line saying the generator fell behind the asked rate, or ``None``."""
    if not result.fell_behind:
        return None
    return (
        f"warning: the generator fell behind the asked rate: {result.summary.late_sends:,} of "
        f"{result.sent:,} requests left more than 2 ms late (worst "
        f"{result.summary.max_send_lag * 1000:.1f} ms); latencies count from the intended "
        "send times, so they include this lag; consider --procs"
    )
