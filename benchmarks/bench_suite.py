"""`make bench`: udpkit against the C reference and the usual Python servers, in one run.

Rule: a measurement, never a test.  Every server runs alone, pinned to core 0
(``taskset``, when there is one), with the C load generators on core 1;
rounds alternate the order of the servers so that noise from other work on
the machine spreads over all of them; the table gives the median of the
rounds and ratios within this run only (to the C reference for UDP, to the
uvloop Protocol server for TCP).  Results replace the section between the
markers in docs/benchmarks.md, and the chart is docs/benchmarks.png.

    .venv/bin/python benchmarks/bench_suite.py [--rounds 3] [--quick] [--only tcp]

``--only tcp`` re-runs the TCP peers alone and replaces only the TCP table
(and its note) in docs/benchmarks.md; the UDP table, the idle figure and the
chart stay those of the last full run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_BUILD = ROOT / "benchmarks" / "c" / "build"
PEERS = ROOT / "benchmarks" / "peers.py"
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
START, END = "<!-- make bench: start -->", "<!-- make bench: end -->"
HOST = "127.0.0.1"
PY = sys.executable
UDPKIT = [PY, "-m", "udpkit", "serve", "--host", HOST, "--log-level", "warning"]

SERVER_CORE, LOAD_CORE = "0", "1"
TASKSET = shutil.which("taskset") if (os.cpu_count() or 1) >= 2 else None


def pinned(core: str, command: list[str]) -> list[str]:
    return [TASKSET, "-c", core, *command] if TASKSET else command


@dataclass
class Peer:
    name: str
    command: list[str]  # "{port}" is replaced
    env: dict[str, str] = field(default_factory=dict)


UDP_PEERS = [
    Peer("C reference (recvmmsg/sendmmsg)", [str(C_BUILD / "greeting_server"), "--host", HOST,
                                             "--port", "{port}"]),
    Peer("udpkit serve (C fast path)", [*UDPKIT, "--no-tcp", "--port", "{port}"]),
    Peer("udpkit serve (pure Python)", [*UDPKIT, "--no-tcp", "--no-fast-path", "--port", "{port}"]),
    Peer("tutorial loop (recvfrom/sendto)", [PY, str(PEERS), "udp-tutorial", "--port", "{port}"]),
    Peer("socketserver.UDPServer", [PY, str(PEERS), "udp-socketserver", "--port", "{port}"]),
    Peer("asyncio DatagramProtocol", [PY, str(PEERS), "udp-asyncio", "--port", "{port}"]),
    Peer("uvloop DatagramProtocol", [PY, str(PEERS), "udp-uvloop", "--port", "{port}"]),
    Peer("Twisted DatagramProtocol", [PY, str(PEERS), "udp-twisted", "--port", "{port}"]),
    Peer("trio socket", [PY, str(PEERS), "udp-trio", "--port", "{port}"]),
]
TCP_PEERS = [
    Peer("uvloop Protocol", [PY, str(PEERS), "tcp-uvloop", "--port", "{port}"]),
    Peer("udpkit serve (C fast path: poller)", [*UDPKIT, "--no-udp", "--port", "{port}"]),
    Peer("udpkit serve (C line reader, no poller)", [*UDPKIT, "--no-udp", "--port", "{port}"],
         env={"UDPKIT_NO_TCP_POLLER": "1"}),
    Peer("udpkit serve (pure Python)", [*UDPKIT, "--no-udp", "--no-fast-path", "--port", "{port}"]),
    Peer("asyncio Protocol", [PY, str(PEERS), "tcp-asyncio", "--port", "{port}"]),
    Peer("asyncio streams", [PY, str(PEERS), "tcp-streams", "--port", "{port}"]),
    Peer("Twisted LineReceiver", [PY, str(PEERS), "tcp-twisted", "--port", "{port}"]),
]
C_REF, TCP_REF = UDP_PEERS[0].name, TCP_PEERS[0].name


def free_port() -> int:
    """A port free for both UDP and TCP on HOST."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
        return port


def wait_ready(port: int, transport: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if transport == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(0.2)
                    sock.sendto(b"probe", (HOST, port))
                    if sock.recv(100) == b"Hello, probe!":
                        return
            else:
                with socket.create_connection((HOST, port), timeout=0.5) as sock:
                    if sock.recv(100).startswith(b"Welcome!"):
                        return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not answer within 20 s")


@contextlib.contextmanager
def running(peer: Peer, transport: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in peer.command]
    process = subprocess.Popen(
        pinned(SERVER_CORE, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **peer.env}, cwd=ROOT,
    )
    try:
        wait_ready(port, transport, process)
        yield port, process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL, each given a few seconds to end it."""
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)


def load(program: str, *args: str, timeout: float = 60) -> dict[str, float]:
    out = subprocess.run(
        pinned(LOAD_CORE, [str(C_BUILD / program), *args]), capture_output=True, text=True,
        timeout=timeout, check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def udp_round(peer: Peer, quick: bool) -> dict[str, float]:
    duration, c1 = ("1", "1") if quick else ("2", "1.5")
    with running(peer, "udp") as (port, _):
        common = ["--host", HOST, "--port", str(port)]
        many = load("udp_loadgen", *common, "--concurrency", "64", "--duration", duration,
                    "--warmup", "0.5")
        one = load("udp_loadgen", *common, "--concurrency", "1", "--duration", c1,
                   "--warmup", "0.3")
    return {"rps": many["rps"], "lost": many["lost"], "p50_us": one["p50_us"]}


def tcp_round(peer: Peer, quick: bool) -> dict[str, float]:
    duration = "1" if quick else "2"
    with running(peer, "tcp") as (port, _):
        common = ["--host", HOST, "--port", str(port), "--connections", "16",
                  "--duration", duration, "--warmup", "0.5"]
        piped = load("tcp_loadgen", *common, "--pipeline", "16")
        single = load("tcp_loadgen", *common, "--pipeline", "1")
    return {"piped": piped["rps"], "single": single["rps"]}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def idle_connections(count: int) -> dict[str, float]:
    """RSS of `udpkit serve` (TCP only) before and while it holds ``count`` idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 512)), hard))
    peer = Peer("udpkit", [*UDPKIT, "--no-udp", "--tcp-idle-timeout", "600",
                           "--tcp-max-connections", str(count + 100), "--port", "{port}"])
    sockets: list[socket.socket] = []
    with running(peer, "tcp") as (port, process):
        time.sleep(0.3)
        before = rss_kib(process.pid)
        try:
            for _ in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.connect((HOST, port))
                sockets.append(sock)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the server accepted them all
                if len(os.listdir(f"/proc/{process.pid}/fd")) >= count:
                    break
                time.sleep(0.1)
            time.sleep(1.0)
            held = rss_kib(process.pid)
        finally:
            for sock in sockets:
                sock.close()
    return {"connections": count, "rss_before_mb": before / 1024, "rss_mb": held / 1024}


# -- report -------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(results: dict[str, object], rounds: int, seconds: float) -> str:
    udp: dict[str, list[dict[str, float]]] = results["udp"]  # type: ignore[assignment]
    tcp: dict[str, list[dict[str, float]]] = results["tcp"]  # type: ignore[assignment]
    idle: dict[str, float] = results["idle"]  # type: ignore[assignment]
    c_rps = median([r["rps"] for r in udp[C_REF]])
    c_p50 = median([r["p50_us"] for r in udp[C_REF]])
    lines = [
        START,
        "## Server comparison (`make bench`)",
        "",
        f"Generated by `make bench` ({rounds} rounds, {seconds:.0f} s; "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.uname().sysname} {os.uname().release}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"{'server on core 0, load on core 1' if TASKSET else 'not pinned'}). "
        "Each figure is the median of the rounds; ratios are within this run. "
        "Other work shares the machine, so compare ratios, not absolute numbers, "
        "with other runs.",
        "",
        "UDP: greeting service, C `udp_loadgen` with 64 requests in flight "
        "(requests/s) and with 1 in flight (p50 latency).",
        "",
        "| server | requests/s | x C | p50 us (1 in flight) | p50 x C | lost | rounds (req/s) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, runs in udp.items():
        rps = median([r["rps"] for r in runs])
        p50 = median([r["p50_us"] for r in runs])
        lost = int(sum(r["lost"] for r in runs))
        each = " · ".join(f"{r['rps'] / 1000:.0f}k" for r in runs)
        lines.append(f"| {name} | {rps:,.0f} | {rps / c_rps:.2f} | {p50:.1f} | "
                     f"{p50 / c_p50:.2f} | {lost} | {each} |")
    lines += ["", *render_tcp(tcp)]
    lines += [
        "",
        f"Idle TCP connections: `udpkit serve` holding {int(idle['connections']):,} idle "
        f"connections: RSS {idle['rss_mb']:.1f} MB (before them: "
        f"{idle['rss_before_mb']:.1f} MB).",
        "",
        "![requests/s relative to the C reference (UDP) and to uvloop (TCP)](benchmarks.png)",
        END,
    ]
    return "\n".join(lines) + "\n"


TCP_INTRO = "TCP: line framing"


def render_tcp(tcp: dict[str, list[dict[str, float]]], note: str = "") -> list[str]:
    """The TCP paragraph and table (``note``: a line saying when it was re-run alone)."""
    u_piped = median([r["piped"] for r in tcp[TCP_REF]])
    u_single = median([r["single"] for r in tcp[TCP_REF]])
    lines = [
        f"{TCP_INTRO} (`Welcome!`, then one `Hello, <line>!` per line), C "
        "`tcp_loadgen` with 16 connections, each pipelining 16 lines or 1 line in flight "
        "(reply lines/s)." + (f" {note}" if note else ""),
        "",
        "| server | lines/s (16 x 16) | x uvloop | lines/s (16 x 1) | x uvloop | "
        "rounds (16 x 16 · 16 x 1, x uvloop) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    reference = tcp[TCP_REF]
    for name, runs in tcp.items():
        piped = median([r["piped"] for r in runs])
        single = median([r["single"] for r in runs])
        each = " · ".join(
            f"{r['piped'] / ref['piped']:.2f}/{r['single'] / ref['single']:.2f}"
            for r, ref in zip(runs, reference, strict=True)
        )
        lines.append(f"| {name} | {piped:,.0f} | {piped / u_piped:.2f} | {single:,.0f} | "
                     f"{single / u_single:.2f} | {each} |")
    return lines


def replace_tcp_table(tcp: dict[str, list[dict[str, float]]], note: str) -> None:
    """Put a TCP-only run's table in place of the last one, keeping everything else."""
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    section, tail = rest.split(END, 1)
    before, after = section.split(TCP_INTRO, 1)
    table_end = after.index("\n\n", after.index("|---|"))
    section = before + "\n".join(render_tcp(tcp, note)) + after[table_end:]
    DOC.write_text(head + START + section + END + tail)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def replace_section(section: str, start: str, end: str) -> None:
    """Put ``section`` (from its ``start`` marker to its ``end``) in docs/benchmarks.md in
    place of the one between those markers, or at its end."""
    text = DOC.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def chart(results: dict[str, object]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart", file=sys.stderr)
        return False
    udp: dict[str, list[dict[str, float]]] = results["udp"]  # type: ignore[assignment]
    tcp: dict[str, list[dict[str, float]]] = results["tcp"]  # type: ignore[assignment]
    c_rps = median([r["rps"] for r in udp[C_REF]])
    u_piped = median([r["piped"] for r in tcp[TCP_REF]])
    u_single = median([r["single"] for r in tcp[TCP_REF]])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(udp)
    values = [median([r["rps"] for r in udp[n]]) / c_rps for n in names]
    colors = ["#c44e52" if n.startswith("udpkit") else "#4c72b0" for n in names]
    left.barh(names[::-1], values[::-1], color=colors[::-1])
    left.axvline(0.85, color="gray", linestyle="--", linewidth=1)
    left.set_xlabel("UDP requests/s relative to the C reference (64 in flight)")
    names = list(tcp)
    piped = [median([r["piped"] for r in tcp[n]]) / u_piped for n in names]
    single = [median([r["single"] for r in tcp[n]]) / u_single for n in names]
    positions = range(len(names))
    right.barh([p + 0.2 for p in positions][::-1], piped[::-1], height=0.4, label="16 x 16")
    right.barh([p - 0.2 for p in positions][::-1], single[::-1], height=0.4, label="16 x 1")
    right.set_yticks(list(positions)[::-1], names[::-1])
    right.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    right.set_xlabel("TCP lines/s relative to the uvloop Protocol server")
    right.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=80)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument("--idle", type=int, default=10_000, help="idle TCP connections")
    parser.add_argument("--only", choices=["tcp"],
                        help="re-run only these peers and replace only their table")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[str, object] = {
        "udp": {peer.name: [] for peer in UDP_PEERS},
        "tcp": {peer.name: [] for peer in TCP_PEERS},
    }
    for index in range(args.rounds):
        order = UDP_PEERS if index % 2 == 0 else UDP_PEERS[::-1]
        for peer in order if args.only is None else []:
            result = udp_round(peer, args.quick)
            results["udp"][peer.name].append(result)  # type: ignore[index]
            print(f"round {index + 1} UDP {peer.name}: {result['rps']:,.0f} req/s, "
                  f"p50 {result['p50_us']:.1f} us", flush=True)
        order = TCP_PEERS if index % 2 == 0 else TCP_PEERS[::-1]
        for peer in order:
            result = tcp_round(peer, args.quick)
            results["tcp"][peer.name].append(result)  # type: ignore[index]
            print(f"round {index + 1} TCP {peer.name}: {result['piped']:,.0f} lines/s piped, "
                  f"{result['single']:,.0f} single", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.only == "tcp":
        seconds = time.monotonic() - started
        note = (f"Re-run alone with `--only tcp` ({args.rounds} rounds, {seconds:.0f} s; "
                f"{time.strftime('%Y-%m-%d %H:%M')}); the UDP table, the idle figure and "
                "the chart are from the full run above.")
        replace_tcp_table(results["tcp"], note)  # type: ignore[arg-type]
        print("\n".join(render_tcp(results["tcp"], note)))  # type: ignore[arg-type]
        print(f"wrote the TCP table of {DOC.relative_to(ROOT)}")
        return
    results["idle"] = idle_connections(args.idle)
    print(f"idle: {results['idle']}", flush=True)
    seconds = time.monotonic() - started
    section = render(results, args.rounds, seconds)
    write_doc(section)
    drew = chart(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(section)
    print(f"wrote {DOC.relative_to(ROOT)}" + (f" and {CHART.relative_to(ROOT)}" if drew else ""))


if __name__ == "__main__":
    main()
