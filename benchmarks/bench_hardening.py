"""What the abuse limits cost: `udpkit serve` with every limit off, with the
defaults (limits on, loopback exempt), and with the rate limiter evaluated on
every request (`--limit-exempt none` and a limit too high to bite).

The C closed-loop `udp_loadgen` (64 in flight), or with `--transport tcp` the
C `tcp_loadgen` (16 connections, 16 lines in flight each), drives each layout
in turn, for ROUNDS rounds; prints the medians and the ratio to all-off.
Loopback only; each server is stopped with SIGTERM.

    make -C benchmarks/c
    .venv/bin/python benchmarks/bench_hardening.py --rounds 3 [--transport tcp]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "benchmarks" / "c" / "build"
LOAD = {
    "udp": ["udp_loadgen", "--concurrency", "64"],
    "tcp": ["tcp_loadgen", "--connections", "16", "--pipeline", "16"],
}
LAYOUTS = {
    "all limits off": ["--rate-limit", "off", "--max-amplification", "off",
                       "--limit-exempt", "none"],
    "defaults (limits on, loopback exempt)": [],
    "rate limiter on every request": ["--limit-exempt", "none", "--rate-limit", "100000000"],
}


def run_once(flags: list[str], duration: float, transport: str) -> float:
    other = "--no-tcp" if transport == "udp" else "--no-udp"
    server = subprocess.Popen([sys.executable, "-m", "udpkit", "serve", "--port", "0",
                               other, *flags], stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        port = ""
        while not port:
            line = server.stderr.readline()
            if not line:
                raise RuntimeError("udpkit serve did not start")
            if match := re.search(r"Bind (?:UDP|TCP) on 127\.0\.0\.1:(\d+)", line):
                port = match.group(1)
        program, *load = LOAD[transport]
        out = subprocess.run([str(BUILD / program), "--host", "127.0.0.1", "--port", port,
                              *load, "--duration", str(duration), "--warmup", "1"],
                             capture_output=True, text=True, timeout=duration + 30,
                             check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["rps"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--transport", choices=sorted(LOAD), default="udp")
    args = parser.parse_args()
    program = BUILD / LOAD[args.transport][0]
    if not program.exists():
        sys.exit(f"{program} is missing: run `make -C benchmarks/c` first")
    results: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(args.rounds):
        for name, flags in LAYOUTS.items():
            results[name].append(run_once(flags, args.duration, args.transport))
    base = statistics.median(results["all limits off"])
    for name, values in results.items():
        median = statistics.median(values)
        rounds = " · ".join(f"{value / 1000:.0f}k" for value in values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f} | {rounds} |")


if __name__ == "__main__":
    main()
