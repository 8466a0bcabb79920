#!/usr/bin/env python3
"""Blocking sync handlers: what five 1-second calls do to another client, with and without
``--handler-threads``.

Rule: one run, one machine, the two servers side by side.  A handler sleeps 1 s for a
request ``block`` and greets anything else; five ``block`` requests arrive at once, and
meanwhile a client sends one greeting every 20 ms for 2.5 s and records each round trip
(a reply not back within 6 s counts as lost).  Without threads the five calls run one
after another on the event loop (about 5 s of nothing for everyone); with
``--handler-threads 8`` they run on five of eight threads and the loop keeps serving (issue 16,
item 5).  The figures go into docs/benchmarks.md by hand.

    .venv/bin/python benchmarks/bench_blocking_handler.py
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite as suite  # the script's own directory, put on the path above

APP = '''
import time

def handle(request, peer):
    if request == b"block":
        time.sleep(1.0)
        return b"unblocked"
    return b"Hello, " + request + b"!"
'''


def run(threads: int, app_dir: str) -> dict[str, float]:
    extra = ["--handler-threads", str(threads)] if threads else []
    peer = suite.Peer(f"threads={threads}", [*suite.UDPKIT, "blocking_app:handle", "--app-dir",
                                               app_dir, "--no-tcp", "--port", "{port}", *extra])
    with suite.running(peer, "udp") as (port, _):
        blockers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
        for sock in blockers:
            sock.sendto(b"block", (suite.HOST, port))
        rtts: list[float] = []
        lost = 0
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(6.0)
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < 2.5:
            payload = b"p%d" % index
            index += 1
            sent = time.monotonic()
            probe.sendto(payload, (suite.HOST, port))
            try:
                while probe.recv(100) != b"Hello, " + payload + b"!":
                    pass
                rtts.append(time.monotonic() - sent)
            except TimeoutError:
                lost += 1
            time.sleep(max(0.0, 0.02 - (time.monotonic() - sent)))
        for sock in (*blockers, probe):
            sock.close()
    rtts.sort()
    return {
        "probes": float(len(rtts) + lost),
        "lost": float(lost),
        "p50_ms": statistics.median(rtts) * 1000 if rtts else float("nan"),
        "max_ms": rtts[-1] * 1000 if rtts else float("nan"),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as app_dir:
        (Path(app_dir) / "blocking_app.py").write_text(APP)
        results = {threads: run(threads, app_dir) for threads in (0, 8)}
    print(f"Blocking sync handler: five 1 s calls at once, a probe every 20 ms for 2.5 s "
          f"({time.strftime('%Y-%m-%d %H:%M')})\n")
    print("| server | probes | answered | p50 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for threads, result in results.items():
        name = "`--handler-threads 8`" if threads else "default (handler on the loop)"
        answered = int(result["probes"] - result["lost"])
        print(f"| {name} | {int(result['probes'])} | {answered} | {result['p50_ms']:.2f} | "
              f"{result['max_ms']:.0f} |")
    off, on = results[0], results[8]
    if on["p50_ms"] > 0:
        print(f"\np50 without threads / with: {off['p50_ms'] / on['p50_ms']:.0f}x")


if __name__ == "__main__":
    main()
