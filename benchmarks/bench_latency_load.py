"""`make bench-load`: latency under load, and how close `udpkit bench` comes to a C generator.

Rule: a measurement, never a test.  Servers run alone on core 0, every load
generator on core 1 (``taskset``, as in bench_suite.py, whose server list and
helpers this reuses).  Two parts, one run:

1. **The generator against the C reference server** (issue 15's targets): the C
   generator at 1 in flight and in its open-loop mode at 1000/s (``--rate``, the
   independent reference), ``udpkit bench --concurrency 1``, ``udpkit bench
   --rate 1000`` on the C-paced path and on the pure path, and the send lag of
   the C-paced path at 1k, 10k and 100k requests/s.
2. **Latency under load**: each server's capacity is measured first (the C
   generator, 64 in flight over UDP; 16 connections x 1 over TCP), then
   ``udpkit bench --rate`` sends open-loop Poisson load at 10, 50, 80 and 95 %
   of it; p50/p99/p99.9 per cell, with the generator's own send lag p99 and a
   mark where it flagged itself.  The chart is docs/latency_load.png.

The section between the markers in docs/benchmarks.md is replaced.

    .venv/bin/python benchmarks/bench_latency_load.py [--seconds 3] [--quick] [--no-tcp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_suite import (
    C_BUILD,
    HOST,
    LOAD_CORE,
    PEERS,
    PY,
    ROOT,
    UDPKIT,
    Peer,
    load,
    pinned,
    running,
)

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "latency_load.png"
START, END = "<!-- make bench-load: start -->", "<!-- make bench-load: end -->"
LOADS = (0.10, 0.50, 0.80, 0.95)

C_SERVER = Peer("C reference (recvmmsg/sendmmsg)",
                [str(C_BUILD / "greeting_server"), "--host", HOST, "--port", "{port}"])
UDP_SERVERS = [
    C_SERVER,
    Peer("udpkit (C fast path)", [*UDPKIT, "--no-tcp", "--port", "{port}"]),
    Peer("udpkit (pure Python)", [*UDPKIT, "--no-tcp", "--no-fast-path", "--port", "{port}"]),
    Peer("uvloop DatagramProtocol", [PY, str(PEERS), "udp-uvloop", "--port", "{port}"]),
]
TCP_SERVERS = [
    Peer("uvloop Protocol", [PY, str(PEERS), "tcp-uvloop", "--port", "{port}"]),
    Peer("udpkit (C fast path: poller)", [*UDPKIT, "--no-udp", "--port", "{port}"]),
    Peer("udpkit (pure Python)", [*UDPKIT, "--no-udp", "--no-fast-path", "--port", "{port}"]),
]


def udpkit_bench(port: int, *args: str, pure: bool = False, seconds: float = 2.0,
                 warmup: float = 0.5) -> dict[str, Any]:
    env = {**os.environ}
    if pure:
        env["UDPKIT_NO_FASTPATH"] = "1"
    command = [PY, "-m", "udpkit", "bench", f"{HOST}:{port}", "--json", "--no-progress",
               "-d", str(seconds), "--warmup", str(warmup), *args]
    out = subprocess.run(pinned(LOAD_CORE, command), capture_output=True, text=True,
                         timeout=seconds + warmup + 60, env=env, cwd=ROOT)
    if not out.stdout.strip():
        raise RuntimeError(f"udpkit bench failed: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def lag(result: dict[str, Any], name: str) -> int | None:
    document = result.get("send_lag_us")
    return None if document is None else int(document[name])


# -- part 1: the generator ------------------------------------------------------------


def generator_part(seconds: float) -> list[str]:
    lines = ["### The generator against the C reference server", "",
             "| what measured the C server | p50 | p99 | send lag p50 | send lag p99 |",
             "|---|---:|---:|---:|---:|"]
    figures: dict[str, float] = {}
    with running(C_SERVER, "udp") as (port, _):
        common = ["--host", HOST, "--port", str(port)]
        c_one = load("udp_loadgen", *common, "--concurrency", "1", "--duration", str(seconds),
                     "--warmup", "0.5")
        figures["c"] = c_one["p50_us"]
        lines.append(f"| C udp_loadgen, closed loop, 1 in flight | {c_one['p50_us']:.1f} us | "
                     f"{c_one.get('p99_us', float('nan')):.1f} us | | |")
        # The same, timed as udpkit bench times a reply: at its kernel arrival.
        c_kernel = load("udp_loadgen", *common, "--concurrency", "1", "--kernel-ts",
                        "--duration", str(seconds), "--warmup", "0.5")
        figures["c_kernel"] = c_kernel["p50_us"]
        lines.append(f"| C udp_loadgen --kernel-ts, closed loop, 1 in flight | "
                     f"{c_kernel['p50_us']:.1f} us | {c_kernel['p99_us']:.1f} us | | |")
        c_open = load("udp_loadgen", *common, "--rate", "1000", "--concurrency", "4096",
                      "--duration", str(seconds), "--warmup", "0.5")
        figures["c_open"] = c_open["p50_us"]
        lines.append(f"| C udp_loadgen --rate 1000 (open loop, sleep + spin) | "
                     f"{c_open['p50_us']:.1f} us | {c_open['p99_us']:.1f} us | | |")
        rows = [
            ("udpkit bench --concurrency 1 (closed loop)", ["--concurrency", "1"], False, "closed"),
            ("udpkit bench --rate 1000 (C-paced)", ["--rate", "1000"], False, "open_c"),
            ("udpkit bench --rate 1000 (pure path)", ["--rate", "1000"], True, "open_py"),
            ("udpkit bench --rate 10000 (C-paced)", ["--rate", "10000"], False, "10k"),
            ("udpkit bench --rate 100000 (C-paced)", ["--rate", "100000"], False, "100k"),
        ]
        for name, args, pure, key in rows:
            result = udpkit_bench(port, *args, pure=pure, seconds=seconds)
            latency = result["latency_us"]
            figures[key] = latency["p50"]
            lag50, lag99 = lag(result, "p50"), lag(result, "p99")
            flag = " (flagged)" if result.get("generator_flagged") else ""
            lines.append(
                f"| {name} | {latency['p50']} us | {latency['p99']} us | "
                + ("" if lag50 is None else f"{lag50} us")
                + " | " + ("" if lag99 is None else f"{lag99} us{flag}") + " |")
    lines += [
        "",
        f"Closed loop, 1 in flight: udpkit / C = {figures['closed'] / figures['c']:.2f}x "
        "(target <= 1.3x); both timed at the reply's kernel arrival (C with --kernel-ts): "
        f"{figures['closed'] / figures['c_kernel']:.2f}x.  "
        "Open loop at 1000/s (C-paced) / closed loop 1 in flight = "
        f"{figures['open_c'] / figures['closed']:.2f}x (target <= 1.25x); against the C "
        f"generator's open loop at 1000/s (the independent reference): "
        f"{figures['open_c'] / figures['c_open']:.2f}x (target <= 1.25x).",
        "",
    ]
    return lines


# -- part 2: latency under load ---------------------------------------------------------


def capacity(peer: Peer, transport: str, port: int, seconds: float) -> float:
    common = ["--host", HOST, "--port", str(port), "--duration", str(seconds),
              "--warmup", "0.5"]
    if transport == "udp":
        return float(load("udp_loadgen", *common, "--concurrency", "64")["rps"])
    return float(load("tcp_loadgen", *common, "--connections", "16", "--pipeline", "1")["rps"])


def load_part(servers: list[Peer], transport: str, seconds: float
              ) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for peer in servers:
        cells: list[dict[str, Any]] = []
        with running(peer, transport) as (port, _):
            top = capacity(peer, transport, port, seconds)
            for fraction in LOADS:
                rate = max(1.0, fraction * top)
                args = ["--rate", f"{rate:.0f}", "--poisson", "--seed", "1"]
                if transport == "tcp":
                    args += ["--tcp", "--connections", "16"]
                result = udpkit_bench(port, *args, seconds=seconds)
                cells.append({"load": fraction, "rate": rate, "capacity": top,
                              "latency": result["latency_us"], "loss": result["loss"],
                              "lag_p99": lag(result, "p99"),
                              "flagged": bool(result.get("generator_flagged")),
                              "fell_behind": bool(result.get("fell_behind"))})
        out[peer.name] = cells
        print(f"  {transport} {peer.name}: capacity {cells[0]['capacity']:,.0f}/s", flush=True)
    return out


def render_load(title: str, table: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [f"### {title}", "",
             "| server | capacity | load | rate/s | p50 | p99 | p99.9 | loss | send lag p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, cells in table.items():
        for cell in cells:
            latency = cell["latency"]
            mark = " (flagged)" if cell["flagged"] else ""
            mark += " (fell behind)" if cell["fell_behind"] else ""
            lag99 = "" if cell["lag_p99"] is None else f"{cell['lag_p99']:,} us{mark}"
            lines.append(
                f"| {name} | {cell['capacity']:,.0f}/s | {cell['load']:.0%} | "
                f"{cell['rate']:,.0f} | {latency['p50']:,} us | {latency['p99']:,} us | "
                f"{latency['p99.9']:,} us | {cell['loss']:.2%} | {lag99} |")
    return [*lines, ""]


def chart(tables: dict[str, dict[str, list[dict[str, Any]]]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.5), squeeze=False)
    for axis, (title, table) in zip(axes[0], tables.items(), strict=True):
        for name, cells in table.items():
            loads = [100 * cell["load"] for cell in cells]
            line = axis.plot(loads, [cell["latency"]["p99"] for cell in cells], marker="o",
                             label=f"{name} p99")[0]
            axis.plot(loads, [cell["latency"]["p50"] for cell in cells], marker=".",
                      linestyle="--", color=line.get_color(), alpha=0.6)
        axis.set_title(f"{title}: latency vs load (p99 solid, p50 dashed)")
        axis.set_xlabel("load, % of the server's own capacity")
        axis.set_ylabel("latency (us)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)
    return True


def write_doc(section: str) -> None:
    text = DOC.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + START + "\n" + section + END + tail
    else:
        text = text.rstrip("\n") + "\n\n" + START + "\n" + section + END + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--quick", action="store_true", help="1 s per cell")
    parser.add_argument("--no-tcp", action="store_true", help="UDP only")
    parser.add_argument("--no-doc", action="store_true", help="print, do not rewrite the doc")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    print("part 1: the generator against the C server", flush=True)
    lines = ["## Latency under load (`make bench-load`)", "",
             f"`benchmarks/bench_latency_load.py`, {seconds:g} s per cell; servers on core 0, "
             "generators on core 1.  Latency of open-loop runs counts from each request's "
             "intended send time to the reply's kernel arrival time; the send lag is the "
             "generator's own error (actual - intended send time), and a run is flagged when "
             "its p99 exceeds half the latency p50: a flagged cell measured the generator "
             "more than the server.  A closed loop's latency also ends at the kernel arrival "
             "time for udpkit (C's udp_loadgen reads its clock after recvmmsg returns, so its "
             "figure includes its own wake-up).", ""]
    lines += generator_part(seconds)
    print("part 2: latency under load", flush=True)
    tables = {"UDP": load_part(UDP_SERVERS, "udp", seconds)}
    if not args.no_tcp:
        tables["TCP"] = load_part(TCP_SERVERS, "tcp", seconds)
    lines += render_load("UDP, open-loop Poisson load at a fraction of each server's capacity",
                         tables["UDP"])
    if "TCP" in tables:
        lines += render_load("TCP (16 connections; sends paced by the event loop)",
                             tables["TCP"])
    if chart(tables):
        lines += ["![latency vs load](latency_load.png)", ""]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_doc:
        write_doc(section)


if __name__ == "__main__":
    main()
