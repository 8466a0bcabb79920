#!/usr/bin/env python3
"""Server CPU time per TCP reply line: udpkit serve (with and without its C poller)
against the uvloop Protocol peer.

Lines per second on a shared 2-core machine move with whatever else runs on
the server's core; the CPU time the server spends per reply line moves much
less.  For each round and each server (alternating order) this starts the
server pinned as `make bench` does, runs the C ``tcp_loadgen`` (16
connections, 1 and 16 lines in flight) and reads the server's user + system
time from ``/proc/PID/stat`` around each run.  Prints every run and the
medians of lines/s and of microseconds per line, with udpkit's ratio to uvloop.

    .venv/bin/python benchmarks/bench_tcp_cpu.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_suite as suite

# uvloop Protocol, udpkit serve (C poller), udpkit serve (C line reader, no poller)
PEERS = suite.TCP_PEERS[:3]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", default="2")
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for index in range(args.rounds):
        for peer in PEERS if index % 2 == 0 else PEERS[::-1]:
            with suite.running(peer, "tcp") as (port, process):
                for pipeline in ("16", "1"):
                    before, started = cpu_seconds(process.pid), time.monotonic()
                    result = suite.load(
                        "tcp_loadgen", "--host", suite.HOST, "--port", str(port),
                        "--connections", "16", "--duration", args.duration, "--warmup", "0.5",
                        "--pipeline", pipeline,
                    )
                    spent, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
                    per_line = 1e6 * spent / (result["rps"] * elapsed)
                    runs.setdefault((peer.name, pipeline), []).append((result["rps"], per_line))
                    print(f"round {index + 1} {peer.name} 16 x {pipeline}: "
                          f"{result['rps']:,.0f} lines/s, {per_line:.2f} us CPU/line", flush=True)
    for pipeline in ("16", "1"):
        medians = {
            name: (statistics.median(r for r, _ in runs[(name, pipeline)]),
                   statistics.median(u for _, u in runs[(name, pipeline)]))
            for name in (peer.name for peer in PEERS)
        }
        ref_rps, ref_us = medians[PEERS[0].name]
        print(f"16 x {pipeline}: {PEERS[0].name} {ref_rps:,.0f} lines/s {ref_us:.2f} us/line")
        for peer in PEERS[1:]:
            rps, us = medians[peer.name]
            print(f"  {peer.name}: {rps:,.0f} lines/s {us:.2f} us/line; x uvloop: lines/s "
                  f"{rps / ref_rps:.2f}, CPU per line {us / ref_us:.2f}")

if __name__ == "__main__":
    main()
