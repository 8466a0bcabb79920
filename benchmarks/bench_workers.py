#!/usr/bin/env python3
"""Requests per second of ``udpkit serve`` with 1 and 2 SO_REUSEPORT workers.

For each layout (``serve`` alone, ``--workers 1``, ``--workers 2``) starts the
server on a free loopback port, runs ``--generators`` C closed-loop
generators at once (``benchmarks/c/build/udp_loadgen``, each its own socket
and so its own source port: the kernel picks a worker per 4-tuple), adds up
their replies per second, stops the server with SIGTERM and reads from the
log how many requests each worker took.  Layouts alternate per round;
prints every run and the median of each layout; ``--output FILE`` writes
JSON.

    python benchmarks/bench_workers.py --rounds 5 --duration 3

On a machine with few cores the generators and the workers share them:
read the figures next to ``nproc``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent
LOADGEN = ROOT / "c" / "build" / "udp_loadgen"
BIND = re.compile(r"Bind UDP on \S+:(\d+)\.\.\.")
WORKER_DONE = re.compile(r"worker (\d+) \(pid \d+\): Stopped: UDP received=(\d+)")
ALONE_DONE = re.compile(r"Summary: UDP received=(\d+)")
LAYOUTS: dict[str, list[str]] = {
    "alone": [],
    "workers=1": ["--workers", "1"],
    "workers=2": ["--workers", "2"],
}


def start(layout: list[str]) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "udpkit", "serve", "--port", "0", "--rate-limit", "off",
               *layout]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert server.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        if match := BIND.search(line):
            if layout:  # wait for the supervisor's line saying every worker is up
                while "Serving with" not in line and line:
                    line = server.stderr.readline()
            return server, int(match.group(1))
    server.kill()
    raise SystemExit(f"udpkit serve {' '.join(layout)} did not start")


def stop(server: subprocess.Popen[str]) -> list[int]:
    """SIGTERM; the requests each worker (or the lone server) received."""
    server.send_signal(signal.SIGTERM)
    _, rest = server.communicate(timeout=60)
    per_worker = {int(slot): int(count) for slot, count in WORKER_DONE.findall(rest)}
    if per_worker:
        return [per_worker[slot] for slot in sorted(per_worker)]
    return [int(count) for count in ALONE_DONE.findall(rest)][-1:]


def load(port: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [str(LOADGEN), "--host", "127.0.0.1", "--port", str(port),
               "--concurrency", str(args.concurrency), "--duration", str(args.duration),
               "--warmup", str(args.warmup)]
    generators = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                  for _ in range(args.generators)]
    results = [json.loads(g.communicate(timeout=120)[0]) for g in generators]
    return {
        "rps": sum(r["rps"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "lost": sum(r["lost"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32, help="per generator")
    parser.add_argument("--generators", type=int, default=4)
    parser.add_argument("--output", type=pathlib.Path, default=None)
    args = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "c")], check=True)

    runs: list[dict[str, Any]] = []
    names = list(LAYOUTS)
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            server, port = start(LAYOUTS[name])
            try:
                result = load(port, args)
            finally:
                result_split = stop(server)
            result.update(layout=name, round=round_index, per_worker=result_split)
            runs.append(result)
            print(f"round {round_index} {name:10s} {result['rps']:>10,.0f} replies/s "
                  f"(lost {result['lost']:,}; requests per worker {result_split})", flush=True)
    medians = {
        name: statistics.median(r["rps"] for r in runs if r["layout"] == name) for name in names
    }
    for name, value in medians.items():
        print(f"median {name:10s} {value:>10,.0f} replies/s")
    print(f"workers=2 / workers=1: {medians['workers=2'] / medians['workers=1']:.2f}; "
          f"cores: {len(os.sched_getaffinity(0))}")
    if args.output is not None:
        args.output.write_text(json.dumps({"arguments": vars(args) | {"output": None},
                                           "medians": medians, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
