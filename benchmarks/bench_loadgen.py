#!/usr/bin/env python3
"""udpkit bench vs the C udp_loadgen, against the same C greeting server.

Builds the C programs (``make -C benchmarks/c``), starts ``greeting_server``
on a free loopback port, then runs, in alternating order, the C closed-loop
generator and ``udpkit bench`` (one process) with the same concurrency,
warm-up and duration, each several times.  Prints every run, the median
replies per second of each and the ratio of the medians (udpkit / C); with
``--output FILE`` writes the same as JSON.

    python benchmarks/bench_loadgen.py --rounds 5 --duration 3 --concurrency 64

Numbers are noisy on a small shared machine: take the medians, not one run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import signal
import statistics
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent
C_DIR = ROOT / "c"
BIND = re.compile(r"Bind UDP on (\S+):(\d+)")


def start_server() -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [str(C_DIR / "build" / "greeting_server"), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = BIND.search(line)
    if match is None:
        server.kill()
        raise SystemExit(f"greeting_server did not start: {line!r}")
    return server, int(match.group(2))


def run_c(port: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        str(C_DIR / "build" / "udp_loadgen"), "--host", "127.0.0.1", "--port", str(port),
        "--concurrency", str(args.concurrency), "--duration", str(args.duration),
        "--warmup", str(args.warmup),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, Any] = json.loads(done.stdout)
    result["command"] = " ".join(command)
    return result


def run_udpkit(port: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "udpkit", "bench", f"127.0.0.1:{port}",
        "--concurrency", str(args.concurrency), "--duration", str(args.duration),
        "--warmup", str(args.warmup), "--json", "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    document = json.loads(done.stdout)
    return {
        "sent": document["sent"],
        "received": document["received"],
        "lost": document["lost"],
        "rps": document["throughput_rps"],
        "p50_us": document["latency_us"]["p50"],
        "p99_us": document["latency_us"]["p99"],
        "command": " ".join(["udpkit", *command[3:]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output", type=pathlib.Path, default=None)
    args = parser.parse_args()

    subprocess.run(["make", "-s", "-C", str(C_DIR)], check=True)
    server, port = start_server()
    runs: list[dict[str, Any]] = []
    try:
        for round_index in range(args.rounds):
            order = ("c", "udpkit") if round_index % 2 == 0 else ("udpkit", "c")
            for name in order:
                result = run_c(port, args) if name == "c" else run_udpkit(port, args)
                result["generator"] = name
                result["round"] = round_index
                runs.append(result)
                print(f"round {round_index} {name:7s} {result['rps']:>12,.0f} replies/s "
                      f"(sent {result['sent']:,}, lost {result['lost']:,}, "
                      f"p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us)",
                      flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    c_median = statistics.median(r["rps"] for r in runs if r["generator"] == "c")
    py_median = statistics.median(r["rps"] for r in runs if r["generator"] == "udpkit")
    per_round = [
        next(r["rps"] for r in runs if r["round"] == i and r["generator"] == "udpkit")
        / next(r["rps"] for r in runs if r["round"] == i and r["generator"] == "c")
        for i in range(args.rounds)
    ]
    ratio = py_median / c_median if c_median else 0.0
    print(f"median C udp_loadgen: {c_median:,.0f} replies/s")
    print(f"median udpkit bench:  {py_median:,.0f} replies/s")
    print(f"ratio udpkit / C (medians): {ratio:.2f}; per round: "
          + ", ".join(f"{value:.2f}" for value in per_round))
    if args.output is not None:
        args.output.write_text(json.dumps({
            "concurrency": args.concurrency, "duration_s": args.duration,
            "warmup_s": args.warmup, "rounds": args.rounds,
            "c_median_rps": c_median, "udpkit_median_rps": py_median,
            "ratio": ratio, "per_round_ratio": per_round, "runs": runs,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
