#!/usr/bin/env python3
"""DNS queries per second and latency: NSD, Knot and ``udpkit serve dns`` on one core.

Each server is started in turn on a free loopback port, pinned to core 0, with
the same generated zone (``--names`` hosts with A and AAAA, CNAMEs, MX, TXT)
and the same query file in dnsperf's format (table hits, CNAME chains, MX and
TXT, 10% NXDOMAIN, some questions in mixed case); the load runs on core 1:

* ``dnsperf`` (Debian's package, EDNS on), closed loop: queries/s and its
  average latency (dnsperf prints no percentiles);
* ``udpkit bench --expect dns`` with the same query file, closed loop:
  queries/s and latency percentiles, to hold udpkit's load generator against
  dnsperf's figures;
* ``udpkit bench --rate R`` (open loop, well below saturation): latency
  percentiles of an unloaded server, the p50 the target speaks of.

Beside each closed-loop run, the server's CPU use (its processes' user+system
time over the run, from /proc): near 100% means the server saturated, not the
generator.  Servers: NSD (``server-count: 1``, RRL off), Knot (one UDP
worker), udpkit on its C fast path and on the pure asyncio path
(``--no-fast-path``).  The servers alternate within each of ``--rounds``
rounds; the table shows each figure's median.  Ratios are against NSD
measured in the same run.

    python benchmarks/bench_dns.py --duration 5 --rounds 3

Needs ``nsd``, ``knot``, ``dnsperf`` (Debian) and ``taskset``; a server whose
program is missing is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dns_servers import knot_command, nsd_command, running

ORIGIN = "bench.test."
SERVER_CORE, LOAD_CORE = "0", "1"
PYTHON = sys.executable


def write_zone(directory: Path, names: int) -> Path:
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 3600",
             "@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300",
             "@ IN NS ns1", "@ IN NS ns2", "ns1 IN A 192.0.2.53", "ns2 IN A 192.0.2.54",
             "@ IN MX 10 mail", "mail IN A 192.0.2.25", '@ IN TXT "v=spf1 -all"']
    for index in range(names):
        lines.append(f"host{index} IN A 10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
        lines.append(f"host{index} IN AAAA 2001:db8::{index:x}")
        if index % 10 == 0:
            lines.append(f"www{index} IN CNAME host{index}")
    path = directory / "bench.test.zone"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_queries(directory: Path, names: int, count: int = 20000) -> Path:
    rng = random.Random(1)
    lines = []
    for index in range(count):
        host = rng.randrange(names)
        kind = index % 10
        if kind < 4:
            line = f"host{host}.{ORIGIN} A"
        elif kind < 6:
            line = f"host{host}.{ORIGIN} AAAA"
        elif kind == 6:
            line = f"www{host - host % 10}.{ORIGIN} A"
        elif kind == 7:
            line = f"{ORIGIN} {'MX' if index % 20 < 10 else 'TXT'}"
        elif kind == 8:
            line = f"HoSt{host}.BeNcH.tEsT. A"  # 0x20-style mixed case
        else:
            line = f"nx{rng.randrange(10**9)}.{ORIGIN} A"
        lines.append(line)
    path = directory / "queries.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
    return port


def udpkit_command(*extra: str) -> Callable[[Path, Path, int], list[str]]:
    def command(zone: Path, run: Path, port: int) -> list[str]:
        return [PYTHON, "-m", "udpkit", "serve", "dns", "--zone", str(zone), "--port",
                str(port), "--no-tcp", "--rate-limit", "off", "--log-level", "warning", *extra]
    return command


SERVERS: dict[str, tuple[str, Callable[[Path, Path, int], list[str]]]] = {
    "NSD": ("nsd", lambda zone, run, port: nsd_command(zone, ORIGIN, run, port)),
    "Knot": ("knotd", lambda zone, run, port: knot_command(zone, ORIGIN, run, port)),
    "udpkit (fast path)": (PYTHON, udpkit_command()),
    "udpkit (pure path)": (PYTHON, udpkit_command("--no-fast-path")),
}


def _answering(port: int, timeout: float = 20.0) -> bool:
    query = bytes.fromhex("abcd00000001000000000000") + b"\x05bench\x04test\x00\x00\x06\x00\x01"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(query, ("127.0.0.1", port))
                if sock.recv(4096)[:2] == b"\xab\xcd":
                    return True
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def pinned(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    with running(["taskset", "-c", SERVER_CORE, *command]) as process:
        yield process


def cpu_seconds(root: int) -> float:
    """User+system CPU seconds of ``root`` and every process below it."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in times.items():
        walk = pid
        while walk > 1 and walk != root:
            walk = parents.get(walk, 0)
        if walk == root:
            total += cpu
    return total


def measured(pid: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before, start = cpu_seconds(pid), time.monotonic()
    figures = run()
    figures["server_cpu"] = (cpu_seconds(pid) - before) / (time.monotonic() - start)
    return figures


def dnsperf(port: int, queries: Path, duration: float, outstanding: int) -> dict[str, Any]:
    result = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
         str(queries), "-l", str(duration), "-q", str(outstanding), "-c", "8", "-e",
         "-t", "2"], capture_output=True, text=True, timeout=duration + 60, check=False)
    qps = re.search(r"Queries per second:\s+([\d.]+)", result.stdout)
    latency = re.search(r"Average Latency \(s\):\s+([\d.]+)", result.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", result.stdout)
    return {"qps": float(qps.group(1)) if qps else 0.0,
            "avg_ms": float(latency.group(1)) * 1000 if latency else 0.0,
            "lost": int(lost.group(1)) if lost else -1}


def udpkit_bench(port: int, queries: Path, duration: float, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        ["taskset", "-c", LOAD_CORE, PYTHON, "-m", "udpkit", "bench", f"127.0.0.1:{port}",
         "--expect", "dns", "--query-file", str(queries), "-d", str(duration), "--warmup",
         "0.5", "--json", *args], capture_output=True, text=True, timeout=duration + 60,
        check=False)
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"qps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "lost": -1,
                "error": result.stderr.strip()[-200:]}
    latency = document.get("latency_us", {})
    return {"qps": document.get("throughput_rps", 0.0),
            "p50_ms": latency.get("p50", 0) / 1000, "p99_ms": latency.get("p99", 0) / 1000,
            "lost": document.get("lost", -1), "wrong": document.get("wrong", 0)}


def bench_server(name: str, command: list[str], port: int, queries: Path,
                 args: argparse.Namespace) -> dict[str, Any] | None:
    with pinned(command) as process:
        if not _answering(port):
            print(f"{name}: did not answer, left out", file=sys.stderr)
            return None
        row: dict[str, Any] = {"server": name}
        row["dnsperf"] = measured(process.pid, lambda: dnsperf(
            port, queries, args.duration, args.outstanding))
        row["udpkit_bench"] = measured(process.pid, lambda: udpkit_bench(
            port, queries, args.duration, "--concurrency", str(args.outstanding)))
        row["fixed_rate"] = udpkit_bench(port, queries, args.duration, "--rate",
                                         str(args.rate))
        return row


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = next((row for row in rows if row["server"] == "NSD"), None)

    def ratio(row: dict[str, Any], part: str, key: str) -> str:
        if base is None or not base[part][key]:
            return ""
        return f" ({row[part][key] / base[part][key]:.2f}x)"

    lines = [
        f"dnsperf and udpkit bench on core {LOAD_CORE}, {args.outstanding} queries "
        f"outstanding, {args.duration:g} s each; servers on core {SERVER_CORE}; "
        f"open-loop latency at {args.rate:g} queries/s; medians of {args.rounds} rounds.",
        "",
        "| server | dnsperf q/s | dnsperf avg | server CPU | udpkit bench q/s "
        "| bench / dnsperf | server CPU | p50 at rate | p99 at rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        perf, ours, fixed = row["dnsperf"], row["udpkit_bench"], row["fixed_rate"]
        share = ours["qps"] / perf["qps"] if perf["qps"] else 0.0
        lines.append(
            f"| {row['server']} | {perf['qps']:,.0f}{ratio(row, 'dnsperf', 'qps')} "
            f"| {perf['avg_ms']:.3f} ms | {perf['server_cpu']:.0%} "
            f"| {ours['qps']:,.0f} | {share:.2f} | {ours['server_cpu']:.0%} "
            f"| {fixed['p50_ms']:.3f} ms{ratio(row, 'fixed_rate', 'p50_ms')} "
            f"| {fixed['p99_ms']:.3f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--names", type=int, default=1000, help="hosts in the zone")
    parser.add_argument("--outstanding", type=int, default=100,
                        help="queries in flight (dnsperf -q, udpkit bench --concurrency)")
    parser.add_argument("--rate", type=float, default=10000,
                        help="queries/s of the open-loop latency run")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated, of: " + ", ".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; the servers alternate in each, the table shows medians")
    parser.add_argument("--output", type=Path, default=None, help="write JSON here")
    args = parser.parse_args()
    for tool in ("taskset", "dnsperf"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_dns: {tool} is not installed (apt-get install dnsperf util-linux)")
    names = [name.strip() for name in args.servers.split(",")]
    for name in names:
        if name not in SERVERS:
            sys.exit(f"bench_dns: unknown server {name!r}")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        directory = Path(tmp)
        zone = write_zone(directory, args.names)
        queries = write_queries(directory, args.names)
        for round_number in range(args.rounds):
            for name in names:  # the servers alternate within each round
                program, build = SERVERS[name]
                if shutil.which(program) is None and not Path(program).exists() and not Path(
                        f"/usr/sbin/{program}").exists():
                    if round_number == 0:
                        print(f"{name}: {program} is not installed, left out", file=sys.stderr)
                    continue
                run = directory / f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}-{round_number}"
                run.mkdir()
                port = free_port()
                row = bench_server(name, build(zone, run, port), port, queries, args)
                if row is not None:
                    runs.setdefault(name, []).append(row)
                    print(f"round {round_number + 1}: {json.dumps(row)}", file=sys.stderr)
    rows = [median_row(name, runs[name]) for name in names if name in runs]
    print(table(rows, args))
    if args.output is not None:
        args.output.write_text(json.dumps({"medians": rows, "runs": runs}, indent=2) + "\n")


def median_row(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure of a server: its median over the rounds."""
    merged: dict[str, Any] = {"server": name}
    for part in ("dnsperf", "udpkit_bench", "fixed_rate"):
        keys = rows[0][part].keys()
        merged[part] = {key: statistics.median(row[part][key] for row in rows)
                        for key in keys if isinstance(rows[0][part][key], (int, float))}
    return merged


if __name__ == "__main__":
    main()
