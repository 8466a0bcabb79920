#!/usr/bin/env python3
"""Fairness: what one greedy pipelining TCP client does to another client's UDP latency.

Rule: the figure that matters is a ratio taken in one run, on one server: the
UDP median latency of a client with one request in flight while a greedy
client pipelines TCP lines as fast as the server takes them, over the same
client's median with the server otherwise idle (issue 16, item 11: the target
is at most 10x).  Two layouts: the greedy source not rate-limited (loopback is
exempt by default), and rate-limited (``--limit-exempt 127.0.0.1/32`` with the
greedy client on 127.0.0.2, so only it is limited).  Each TCP path of the
server is measured (C poller, C line reader, pure Python).

``--baseline REV`` runs the same layouts against an earlier revision too (its
tree built as ``bench_compare.py`` builds it), before and after in one run.

    .venv/bin/python benchmarks/bench_fairness.py [--seconds 3] [--baseline 0c5185f]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_suite as suite  # the script's own directory, put on the path above

ROOT = suite.ROOT
GREEDY_SOURCE = "127.0.0.2"
PATHS = {
    "C poller": {},
    "C line reader": {"UDPKIT_NO_TCP_POLLER": "1"},
    "pure Python": {"UDPKIT_NO_FASTPATH": "1"},
}
LAYOUTS = {
    "greedy not limited": [],
    "greedy rate-limited": ["--limit-exempt", "127.0.0.1/32", "--rate-limit", "1000"],
}


def greedy(port: int, seconds: float) -> None:
    """The greedy client (run as a child process): pipeline lines as fast as the server
    takes them, read and discard the replies; print lines sent and bytes of reply read."""
    sock = socket.create_connection((suite.HOST, port), source_address=(GREEDY_SOURCE, 0))
    received = 0

    def drain() -> None:
        nonlocal received
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            received += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    chunk = b"greedy\n" * 8192
    sent = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except TimeoutError:
            continue
        except OSError:
            break
    print(sent // len(b"greedy\n"), received, flush=True)
    sock.close()


def udp_probe(port: int, seconds: float) -> tuple[float, float, int]:
    """One request in flight for ``seconds``: (p50 ms, p99 ms, timeouts)."""
    samples: list[float] = []
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((suite.HOST, port))
        sock.settimeout(2.0)
        deadline = time.monotonic() + seconds
        index = 0
        while time.monotonic() < deadline:
            payload = b"probe%d" % index
            index += 1
            started = time.perf_counter()
            sock.send(payload)
            try:
                while sock.recv(200) != b"Hello, " + payload + b"!":
                    pass
            except TimeoutError:
                lost += 1
                continue
            samples.append(time.perf_counter() - started)
            time.sleep(0.0005)  # a client, not a load generator
    if not samples:
        return float("inf"), float("inf"), lost
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) * 1e3, p99 * 1e3, lost


def measure(label: str, env: dict[str, str], flags: list[str], seconds: float) -> dict[str, float]:
    peer = suite.Peer(label, [*suite.UDPKIT, "--port", "{port}", *flags], env)
    with suite.running(peer, "udp") as (port, _process):
        alone = udp_probe(port, seconds)
        child = subprocess.Popen(
            suite.pinned(suite.LOAD_CORE, [sys.executable, __file__, "--greedy-child", str(port),
                                           str(seconds + 1.5)]),
            stdout=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(0.5)  # the greedy client is at full speed
            loaded = udp_probe(port, seconds)
            out, _ = child.communicate(timeout=seconds + 30)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    lines, reply_bytes = (int(field) for field in out.split())
    return {"alone_p50": alone[0], "loaded_p50": loaded[0], "loaded_p99": loaded[1],
            "lost": loaded[2], "greedy_lines": lines, "greedy_reply_bytes": reply_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--baseline", help="git revision to measure too (before)")
    parser.add_argument("--greedy-child", nargs=2, metavar=("PORT", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.greedy_child:
        greedy(int(args.greedy_child[0]), float(args.greedy_child[1]))
        return
    trees = [("after", ROOT / "src")]
    if args.baseline:
        import bench_compare

        tree, commit = bench_compare.baseline_tree(args.baseline)
        trees.insert(0, (f"before ({commit})", tree / "src"))
    rows = []
    for tree_label, src in trees:
        for path, path_env in PATHS.items():
            for layout, flags in LAYOUTS.items():
                env = {"PYTHONPATH": str(src), **path_env}
                result = measure(f"{tree_label} {path}", env, flags, args.seconds)
                ratio = result["loaded_p50"] / result["alone_p50"]
                rows.append((tree_label, path, layout, result, ratio))
                print(f"{tree_label:>18} | {path:<13} | {layout:<19} | UDP p50 alone "
                      f"{result['alone_p50']:.3f} ms, with greedy {result['loaded_p50']:.3f} ms "
                      f"(p99 {result['loaded_p99']:.2f} ms, {result['lost']:.0f} lost): "
                      f"x{ratio:.1f}; greedy sent {result['greedy_lines']:,.0f} lines, "
                      f"read {result['greedy_reply_bytes']:,.0f} B", flush=True)
    print()
    print("| revision | TCP path | greedy client | UDP p50 alone | UDP p50 with greedy | ratio |")
    print("|---|---|---|---|---|---|")
    for tree_label, path, layout, result, ratio in rows:
        loaded, alone = result["loaded_p50"], result["alone_p50"]
        if loaded == float("inf"):  # not one reply within the probe's 2 s timeout
            shown, times = "no reply in 2 s", f"> {2000 / alone:,.0f}x"
        else:
            shown, times = f"{loaded:.3f} ms", f"{ratio:.1f}x"
        print(f"| {tree_label} | {path} | {layout.removeprefix('greedy ')} | "
              f"{alone:.3f} ms | {shown} | {times} |")


if __name__ == "__main__":
    main()
