"""``udpkit proxy``: what its relay costs (before/after one change), what its toxics do.

Rule: figures are ratios measured in the same run.  Two tables:

* Relay cost: TCP bulk throughput and small-message round trips, direct to an echo
  service and through ``udpkit proxy --upstream`` (no impairment) of this tree and of a
  baseline revision (a git worktree, as ``bench_compare.py`` keeps them), in alternating
  order; each figure as a ratio to direct in its round, then after/before.
* Toxic accuracy (this tree): each measurable toxic of a named proxy, added through
  Toxiproxy's API, measured through the proxy against its setting (latency added against
  direct; bandwidth as the time a known amount takes).

    .venv/bin/python benchmarks/bench_proxy.py [--baseline REV] [--rounds 3] [--quick]

The proxy runs in its own process, pinned to core 0 when ``taskset`` exists; the echo
service and the load run in this one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compare import baseline_tree  # the script's own directory, put on the path above

ROOT = Path(__file__).resolve().parents[1]
TASKSET = shutil.which("taskset") if (os.cpu_count() or 1) >= 2 else None
_READY = re.compile(r"on \S+:(\d+) -> |API on http://\S+:(\d+)")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        if isinstance(sock, tuple):  # UDP: (data, socket)
            data, udp = sock
            udp.sendto(data, self.client_address)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := sock.recv(262144):
                sock.sendall(data)
        except OSError:
            pass


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def echo_service() -> Iterator[int]:
    tcp = _Tcp(("127.0.0.1", 0), _Echo)
    port = tcp.server_address[1]
    udp = socketserver.ThreadingUDPServer(("127.0.0.1", port), _Echo)
    for server in (tcp, udp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield port
    finally:
        for server in (tcp, udp):
            server.shutdown()
            server.server_close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROXY_PIDS: dict[int, int] = {}
"""Port of a running proxy process -> its pid (for :func:`cpu_seconds`)."""


@contextmanager
def proxy_process(src: Path, *args: str) -> Iterator[int]:
    """``udpkit proxy ARGS`` from the tree ``src``; the port its log names."""
    command = [sys.executable, "-m", "udpkit", "proxy", "--listen", "127.0.0.1:0", *args]
    if TASKSET:
        command = [TASKSET, "-c", "0", *command]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(src)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 15
        port = 0
        while not port and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            if match := _READY.search(line):
                port = int(match.group(1) or match.group(2))
        if not port:
            raise SystemExit(f"udpkit proxy from {src} did not start")
        PROXY_PIDS[port] = process.pid
        yield port
    finally:
        process.terminate()
        process.wait(15)


def bulk_mb_per_s(port: int, megabytes: int) -> float:
    payload = b"x" * 65536
    total = megabytes * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = 0

        def reader() -> None:
            nonlocal received
            while received < total and (chunk := sock.recv(262144)):
                received += len(chunk)

        thread = threading.Thread(target=reader)
        start = time.perf_counter()
        thread.start()
        for _ in range(total // len(payload)):
            sock.sendall(payload)
        thread.join(60)
        elapsed = time.perf_counter() - start
    return received / elapsed / 1e6


def round_trip_us(port: int, count: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(b"ping")
            sock.recv(100)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def relay_table(baseline: str, rounds: int, quick: bool) -> str:
    tree, commit = baseline_tree(baseline)
    trees = {f"before ({commit})": tree / "src", "after": ROOT / "src"}
    megabytes, count = (16, 300) if quick else (128, 3000)
    bulk: dict[str, list[float]] = {name: [] for name in trees}
    trip: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    with echo_service() as echo:
        for index in range(rounds):
            order = list(trees.items())[::(-1 if index % 2 else 1)]
            for name, src in order:
                direct_bulk = bulk_mb_per_s(echo, megabytes)
                direct_trip = round_trip_us(echo, count)
                with proxy_process(src, "--upstream", f"127.0.0.1:{echo}") as port:
                    before_cpu = cpu_seconds(PROXY_PIDS[port])
                    bulk[name].append(bulk_mb_per_s(port, megabytes) / direct_bulk)
                    # both directions relayed: 2 x megabytes through the proxy
                    cpu[name].append((cpu_seconds(PROXY_PIDS[port]) - before_cpu) * 1000
                                     / (2 * megabytes))
                    trip[name].append(round_trip_us(port, count) / direct_trip)
                print(f"round {index + 1}/{rounds} {name}: bulk {bulk[name][-1]:.2f} x direct, "
                      f"{cpu[name][-1]:.2f} CPU ms/MB, round trip {trip[name][-1]:.2f} x direct",
                      flush=True)
    before, after = trees
    lines = ["| TCP through `udpkit proxy --upstream` | " + " | ".join(trees) + " | after/before |",
             "|---|---|---|---|"]
    for label, figures in (("bulk throughput, x direct", bulk),
                           ("proxy CPU ms per MB relayed", cpu),
                           ("round trip p50, x direct", trip)):
        b, a = statistics.median(figures[before]), statistics.median(figures[after])
        lines.append(f"| {label} | {b:.2f} | {a:.2f} | {a / b:.2f} |")
    return "\n".join(lines)


def api(port: int, method: str, path: str, body: object | None = None) -> object:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def udp_round_trip(port: int) -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        start = time.perf_counter()
        sock.sendto(b"ping", ("127.0.0.1", port))
        sock.recv(100)
        return time.perf_counter() - start


def tcp_exchange(port: int, size: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.perf_counter()
        sock.sendall(b"b" * size)
        got = 0
        while got < size:
            got += len(sock.recv(262144))
        return time.perf_counter() - start


def udp_burst(port: int, count: int, size: int) -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        start = time.perf_counter()
        for _ in range(count):
            sock.sendto(b"d" * size, ("127.0.0.1", port))
        for _ in range(count):
            sock.recv(size + 1)
        return time.perf_counter() - start


def toxic_table() -> str:
    rows = []
    with echo_service() as echo, proxy_process(ROOT / "src", "--control",
                                               "127.0.0.1:0") as control:
        def proxy(name: str, protocol: str) -> int:
            made = api(control, "POST", "/proxies", {"name": name, "protocol": protocol,
                                                     "upstream": f"127.0.0.1:{echo}"})
            assert isinstance(made, dict)
            return int(str(made["listen"]).rpartition(":")[2])

        tcp, udp = proxy("tcp", "tcp"), proxy("udp", "udp")
        for name, port, trip in (("tcp", tcp, lambda p: tcp_exchange(p, 4)),
                                 ("udp", udp, udp_round_trip)):
            base = statistics.median(trip(echo) for _ in range(5))
            api(control, "POST", f"/proxies/{name}/toxics",
                {"type": "latency", "attributes": {"latency": 200}})
            added = statistics.median(trip(port) for _ in range(5)) - base
            rows.append((f"latency 200 ms ({name.upper()})", "200 ms", f"{added * 1000:.1f} ms",
                         added / 0.2))
            api(control, "DELETE", f"/proxies/{name}/toxics/latency_downstream")
        api(control, "POST", "/proxies/tcp/toxics", {"type": "bandwidth",
                                                     "attributes": {"rate": 100}})
        elapsed = tcp_exchange(tcp, 100_000)
        rows.append(("bandwidth 100 KB/s, 100 kB (TCP)", "1.000 s", f"{elapsed:.3f} s",
                     elapsed / 1.0))
        api(control, "POST", "/proxies/udp/toxics", {"type": "bandwidth", "stream": "upstream",
                                                     "attributes": {"rate": 50}})
        elapsed = udp_burst(udp, 50, 1000)
        rows.append(("bandwidth 50 KB/s, 50 x 1000 B (UDP)", "1.000 s", f"{elapsed:.3f} s",
                     elapsed / 1.0))
    lines = ["| toxic | set | measured | measured/set |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d:.2f} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    args = parser.parse_args()
    print(relay_table(args.baseline, args.rounds, args.quick))
    print()
    print(toxic_table())


if __name__ == "__main__":
    main()
