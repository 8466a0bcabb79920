"""Latency at 1 in flight (`make bench-latency`): C reference, udpkit, udpkit --busy-poll.

Rule: a measurement, never a test.  Each round runs every server alone, pinned to
core 0 (the load on core 1, as in ``bench_suite.py``), in alternating order, and
measures:

* the C generator (``udp_loadgen``) with 1 request in flight: p50 and p99, and
  the server's CPU time per second of that load;
* the same generator with 64 in flight: requests/s (busy polling must not cost
  throughput);
* the server's CPU time per second while idle after the load (busy polling must
  go back to sleep);
* sockperf ping-pong (the Debian package ``sockperf``, if installed) against
  ``sockperf server`` and against udpkit serving ``sockperf_reflector:handler``:
  p50 and p99 (sockperf reports half the round trip).

Ratios are to the C reference of the same round (for sockperf: to ``sockperf
server``); the table gives their medians and how many rounds met the targets of
issue 18.  ``--curve`` adds the busy-poll durations of the README's curve.

    .venv/bin/python benchmarks/bench_latency.py [--rounds 10] [--quick] [--curve] [--doc]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite as suite  # the script's own directory, put on the path above

ROOT = suite.ROOT
HOST = suite.HOST
START, END = "<!-- bench_latency: start -->", "<!-- bench_latency: end -->"
SOCKPERF = shutil.which("sockperf")
C_REF = "C reference (blocking recvmmsg)"
DEFAULT = "udpkit serve (default)"
BUSY = "udpkit serve --busy-poll 50us"
CURVE = ("10us", "25us", "100us", "200us")
REFLECTOR = ["--app-dir", str(ROOT / "benchmarks"), "sockperf_reflector:handler"]
SOCKPERF_REF = "sockperf server"

Probe = Callable[[socket.socket], bool]


def greeting_probe(sock: socket.socket) -> bool:
    sock.send(b"probe")
    return sock.recv(100) == b"Hello, probe!"


def sockperf_probe(sock: socket.socket) -> bool:
    """A ping that asks for a reply (flags: client 1, pong 2; see sockperf_reflector)."""
    message = (1).to_bytes(8, "big") + (3).to_bytes(2, "big") + (14).to_bytes(4, "big")
    sock.send(message)
    return len(sock.recv(100)) == 14


def udpkit(*options: str) -> list[str]:
    return [*suite.UDPKIT, "--no-tcp", "--port", "{port}", *options]


def greeting_servers(curve: bool) -> list[suite.Peer]:
    servers = [
        suite.Peer(C_REF, [str(suite.C_BUILD / "greeting_server"), "--host", HOST,
                           "--port", "{port}"]),
        suite.Peer(DEFAULT, udpkit()),
        suite.Peer(BUSY, udpkit("--busy-poll", "50us")),
    ]
    if curve:
        servers += [suite.Peer(f"udpkit serve --busy-poll {d}", udpkit("--busy-poll", d))
                    for d in CURVE]
        servers.append(suite.Peer("udpkit serve --loop asyncio", udpkit("--loop", "asyncio")))
        servers.append(suite.Peer("udpkit serve --loop asyncio --busy-poll 50us",
                                  udpkit("--loop", "asyncio", "--busy-poll", "50us")))
    return servers


def sockperf_servers() -> list[suite.Peer]:
    return [
        suite.Peer(SOCKPERF_REF, [SOCKPERF or "sockperf", "server", "-i", HOST, "-p", "{port}"]),
        suite.Peer(DEFAULT, udpkit(*REFLECTOR)),
        suite.Peer(BUSY, udpkit("--busy-poll", "50us", *REFLECTOR)),
    ]


@contextlib.contextmanager
def running(peer: suite.Peer, probe: Probe) -> Iterator[tuple[int, int]]:
    """The server started on core 0 and answering; yields (port, pid)."""
    port = suite.free_port()
    command = [part.replace("{port}", str(port)) for part in peer.command]
    process = subprocess.Popen(suite.pinned(suite.SERVER_CORE, command),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{peer.name} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} did not answer within 20 s")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                sock.connect((HOST, port))
                with contextlib.suppress(OSError):
                    if probe(sock):
                        break
            time.sleep(0.1)
        time.sleep(0.2)  # the probe's own spin, if any, is over
        yield port, process.pid
    finally:
        suite.stop(process)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far (schedstat: nanoseconds on a CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def cpu_per_second(pid: int, during: Callable[[], object]) -> tuple[object, float]:
    """Run ``during``; return its result and the server's CPU seconds per wall second."""
    cpu, wall = cpu_seconds(pid), time.monotonic()
    result = during()
    return result, (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


def greeting_round(peer: suite.Peer, quick: bool) -> dict[str, float]:
    one_s, many_s, idle_s = ("1", "1", 0.5) if quick else ("2", "1.5", 1.0)
    with running(peer, greeting_probe) as (port, pid):
        common = ["--host", HOST, "--port", str(port)]
        one, cpu_load = cpu_per_second(pid, lambda: suite.load(
            "udp_loadgen", *common, "--concurrency", "1", "--duration", one_s, "--warmup", "0.3"))
        many = suite.load("udp_loadgen", *common, "--concurrency", "64", "--duration", many_s,
                          "--warmup", "0.3")
        time.sleep(0.05)  # the spin after the last request ends (50 us) well within this
        _, cpu_idle = cpu_per_second(pid, lambda: time.sleep(idle_s))
    assert isinstance(one, dict)
    return {"p50_us": one["p50_us"], "p99_us": one["p99_us"], "rps": many["rps"],
            "lost": one["lost"] + many["lost"], "cpu_load": cpu_load, "cpu_idle": cpu_idle}


_PERCENTILE = re.compile(r"percentile\s+(\d+\.\d+)\s*=\s*([\d.]+)")


def sockperf_round(peer: suite.Peer, quick: bool) -> dict[str, float]:
    seconds = "1" if quick else "2"
    with running(peer, sockperf_probe) as (port, _):
        out = subprocess.run(
            suite.pinned(suite.LOAD_CORE, [SOCKPERF or "sockperf", "ping-pong", "-i", HOST,
                                           "-p", str(port), "-t", seconds]),
            capture_output=True, text=True, timeout=60, check=True,
        )
    found = {float(q): float(v) for q, v in _PERCENTILE.findall(out.stdout + out.stderr)}
    if 50.0 not in found or 99.0 not in found:
        raise RuntimeError(f"no percentiles in sockperf's output:\n{out.stdout}{out.stderr}")
    return {"p50_us": found[50.0], "p99_us": found[99.0]}


# -- report -------------------------------------------------------------------------

Runs = dict[str, list[dict[str, float]]]


def ratios(runs: Runs, name: str, ref: str, key: str) -> list[float]:
    return [r[key] / c[key] for r, c in zip(runs[name], runs[ref], strict=True)]


def render(greeting: Runs, sockperf: Runs, rounds: int, seconds: float) -> str:
    median = suite.median
    lines = [
        START,
        "## Latency at 1 in flight (`make bench-latency`)",
        "",
        f"Generated by `benchmarks/bench_latency.py` ({rounds} rounds, {seconds:.0f} s; "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.uname().sysname} {os.uname().release}, "
        f"{os.cpu_count()} cores, "
        f"{'server on core 0, load on core 1' if suite.TASKSET else 'not pinned'}). "
        "Medians of the rounds; ratios are to the reference of the same round. "
        "CPU is the server's CPU seconds per second (1.0: a whole core).",
        "",
        "C generator (`udp_loadgen`), greeting service:",
        "",
        "| server | p50 us | p50 x C | p99 us | p99 x C | req/s at 64 in flight | x C | "
        "CPU at 1 in flight | CPU idle | p50 x C, each round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, runs in greeting.items():
        p50 = ratios(greeting, name, C_REF, "p50_us")
        lines.append(
            f"| {name} | {median([r['p50_us'] for r in runs]):.1f} | {median(p50):.2f} | "
            f"{median([r['p99_us'] for r in runs]):.1f} | "
            f"{median(ratios(greeting, name, C_REF, 'p99_us')):.2f} | "
            f"{median([r['rps'] for r in runs]):,.0f} | "
            f"{median(ratios(greeting, name, C_REF, 'rps')):.2f} | "
            f"{median([r['cpu_load'] for r in runs]):.2f} | "
            f"{median([r['cpu_idle'] for r in runs]):.3f} | "
            f"{' '.join(f'{x:.2f}' for x in p50)} |")
    if sockperf:
        lines += [
            "",
            "sockperf ping-pong (one-way latency, half the round trip), against `sockperf "
            "server` and udpkit serving `benchmarks/sockperf_reflector.py`:",
            "",
            "| server | p50 us | p50 x sockperf server | p99 us | p99 x sockperf server | "
            "p50 x sockperf server, each round |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, runs in sockperf.items():
            p50 = ratios(sockperf, name, SOCKPERF_REF, "p50_us")
            lines.append(
                f"| {name} | {median([r['p50_us'] for r in runs]):.1f} | {median(p50):.2f} | "
                f"{median([r['p99_us'] for r in runs]):.1f} | "
                f"{median(ratios(sockperf, name, SOCKPERF_REF, 'p99_us')):.2f} | "
                f"{' '.join(f'{x:.2f}' for x in p50)} |")
    lines += ["", *targets(greeting, sockperf, rounds), END]
    return "\n".join(lines) + "\n"


def targets(greeting: Runs, sockperf: Runs, rounds: int) -> list[str]:
    """How many rounds met each target of issue 18."""
    def count(runs: Runs, name: str, ref: str, key: str, limit: float) -> int:
        return sum(x <= limit for x in ratios(runs, name, ref, key))

    lines = [
        "Targets (rounds that met them, of " f"{rounds}): default p50 <= 1.15 x C: "
        f"{count(greeting, DEFAULT, C_REF, 'p50_us', 1.15)} (generator)",
    ]
    if sockperf:
        lines[0] += f", {count(sockperf, DEFAULT, SOCKPERF_REF, 'p50_us', 1.15)} (sockperf)"
    lines[0] += (
        f"; --busy-poll 50us p50 <= 0.9 x C: {count(greeting, BUSY, C_REF, 'p50_us', 0.9)}, "
        f"p99 <= 1.0 x C: {count(greeting, BUSY, C_REF, 'p99_us', 1.0)}; "
        f"requests/s at 64 in flight, --busy-poll 50us / default: median "
        f"{suite.median(ratios(greeting, BUSY, DEFAULT, 'rps')):.2f}."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument("--curve", action="store_true",
                        help="also busy-poll 10/25/100/200 us and the asyncio loop")
    parser.add_argument("--no-sockperf", action="store_true", help="skip sockperf")
    parser.add_argument("--doc", action="store_true",
                        help="write the table into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    servers = greeting_servers(args.curve)
    pingers = sockperf_servers() if SOCKPERF and not args.no_sockperf else []
    if not SOCKPERF and not args.no_sockperf:
        print("sockperf not installed (apt-get install sockperf): generator only", flush=True)
    greeting: Runs = {p.name: [] for p in servers}
    sockperf: Runs = {p.name: [] for p in pingers}
    started = time.monotonic()
    for index in range(args.rounds):
        flip = index % 2 == 1
        for peer in servers[::-1] if flip else servers:
            result = greeting_round(peer, args.quick)
            greeting[peer.name].append(result)
            print(f"round {index + 1}/{args.rounds} {peer.name}: p50 {result['p50_us']:.1f} us, "
                  f"p99 {result['p99_us']:.1f} us, {result['rps']:,.0f} req/s, CPU "
                  f"{result['cpu_load']:.2f} (load) {result['cpu_idle']:.3f} (idle)", flush=True)
        for peer in pingers[::-1] if flip else pingers:
            result = sockperf_round(peer, args.quick)
            sockperf[peer.name].append(result)
            print(f"round {index + 1}/{args.rounds} sockperf {peer.name}: p50 "
                  f"{result['p50_us']:.1f} us, p99 {result['p99_us']:.1f} us", flush=True)
    text = render(greeting, sockperf, args.rounds, time.monotonic() - started)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"greeting": greeting, "sockperf": sockperf}, indent=1))
    if args.doc:
        suite.replace_section(text, START, END)
        print(f"wrote {suite.DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
