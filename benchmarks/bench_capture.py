#!/usr/bin/env python3
"""Record and replay: what ``proxy --pcap`` costs, how fast ``bench --replay`` reads and sends.

Rule: one run, one machine, every figure beside its baseline from the same run:

1. the proxy's throughput (closed-loop ``udpkit bench`` through it, UDP) with and
   without ``--pcap``: the ratio is the recorder's cost;
2. ``bench --replay --speed max`` of a capture against ``udpkit bench`` at the same
   concurrency on the same server: the ratio is what replaying costs against
   generating;
3. reading a capture of N datagrams (dpkt): datagrams per second.

    .venv/bin/python benchmarks/bench_capture.py [--seconds 3] [--rounds 3] [--datagrams 100000]

The figures go into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

UDPKIT = [sys.executable, "-m", "udpkit"]
HOST = "127.0.0.1"


@contextmanager
def background(args: list[str], ready: str) -> Iterator[int]:
    """Run ``udpkit ARGS`` until the block ends; yield the port its ``ready`` line names."""
    process = subprocess.Popen([*UDPKIT, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    port = None
    deadline = time.monotonic() + 20
    for line in process.stderr:
        if match := re.search(ready, line):
            port = int(match.group(1))
            break
        if time.monotonic() > deadline:
            break
    try:
        if port is None:
            raise RuntimeError(f"udpkit {args[0]} did not start")
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench(*args: str) -> dict[str, object]:
    done = subprocess.run([*UDPKIT, "bench", *args, "--json", "--no-progress"],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    document: dict[str, object] = json.loads(done.stdout)
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--datagrams", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    seconds = str(options.seconds)
    concurrency = str(options.concurrency)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as work, \
            background(["serve", "--port", "0", "--no-tcp"], r"Bind UDP on \S+:(\d+)") as port:
        record = Path(work) / "proxy.pcap"
        through: dict[str, list[float]] = {"proxy": [], "proxy --pcap": []}
        for _ in range(options.rounds):  # alternated, so drifting load hits both alike
            for name, extra in (("proxy", []), ("proxy --pcap", ["--pcap", str(record)])):
                with background(["proxy", "--listen", f"{HOST}:0", "--upstream",
                                 f"{HOST}:{port}", "--no-tcp", *extra],
                                r"Proxy \S+ on \S+:(\d+)") as proxy_port:
                    result = bench(f"{HOST}:{proxy_port}", "--duration", seconds, "--warmup",
                                   "0.5", "--concurrency", concurrency)
                through[name].append(float(result["throughput_rps"]))  # type: ignore[arg-type]
        plain = statistics.median(through["proxy"])
        recorded = statistics.median(through["proxy --pcap"])
        rows.append((f"proxy, replies/s (median of {options.rounds})", f"{plain:,.0f}"))
        rows.append((f"proxy --pcap, replies/s (median of {options.rounds})",
                     f"{recorded:,.0f} ({recorded / plain:.2f}x)"))

        from udpkit.capture import PcapRecorder, read_capture_untrusted

        capture = Path(work) / "many.pcap"
        with capture.open("wb") as file:
            clock = itertools.count()
            recorder = PcapRecorder(file, clock=lambda: 1e9 + next(clock) * 1e-5)
            for index in range(options.datagrams):
                recorder.datagram(client=(HOST, 40000 + index % 64), proxy=(HOST, 9999),
                                  payload=b"n%d" % index, to_server=True)
        taps = 20_000
        recorder = PcapRecorder(io.BytesIO())
        started = time.perf_counter()
        for _ in range(taps):
            recorder.datagram(client=(HOST, 40000), proxy=(HOST, 9999), payload=b"Michael",
                              to_server=True)
        rows.append(("recorder, us per datagram tapped",
                     f"{(time.perf_counter() - started) / taps * 1e6:.1f}"))
        started = time.perf_counter()
        read = read_capture_untrusted(capture)
        elapsed = time.perf_counter() - started
        rows.append((f"read {len(read.datagrams):,} datagrams (dpkt), datagrams/s",
                     f"{len(read.datagrams) / elapsed:,.0f}"))

        generated = bench(f"{HOST}:{port}", "--requests", str(options.datagrams), "--warmup",
                          "0", "--concurrency", concurrency)
        replayed = bench(f"{HOST}:{port}", "--replay", str(capture), "--replay-port", "9999",
                         "--speed", "max", "--concurrency", concurrency, "--expect", "greeting")
        base = float(generated["throughput_rps"])  # type: ignore[arg-type]
        replay = float(replayed["throughput_rps"])  # type: ignore[arg-type]
        rows.append(("bench (generated), replies/s", f"{base:,.0f}"))
        rows.append(("bench --replay --speed max (64 sockets), replies/s",
                     f"{replay:,.0f} ({replay / base:.2f}x)"))
    print("| figure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
