"""One greedy TCP client against everyone else's latency (issue 16, item 11).

Before: a single source pipelining TCP lines had every byte it sent handled in
one event-loop callback, so another client's UDP median went from 0.015 ms to
8 ms (C poller) and to 300-1,400 ms (C line reader, pure Python), with lost
requests when the greedy source was rate-limited (each limited line got its
own reply).  Now each connection has a turn of bytes per callback and a
limited one pauses until its tokens refill.

The latencies are printed, not asserted (timing belongs in
``benchmarks/bench_fairness.py``); what is asserted does not depend on speed:
every request of the other client is answered, the counters are exact, and a
limited greedy client gets one error reply a pause, not one a line.
Loopback only, bounded in time; the server runs in its own process.
"""

from __future__ import annotations

import signal
import socket
import statistics
import threading
import time

import pytest

from tests.processes import parse_summary, serve

GREEDY_SOURCE = "127.0.0.2"
PATHS = {
    "poller": {},
    "line reader": {"UDPKIT_NO_TCP_POLLER": "1"},
    "pure": {"UDPKIT_NO_FASTPATH": "1"},
}


class Greedy(threading.Thread):
    """Pipelines TCP lines as fast as the server takes them, reading replies meanwhile."""

    reply_bytes: bytes

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(GREEDY_SOURCE, 0))
        self.seconds = seconds
        self.sent = 0
        self.reply_bytes = b""
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        chunks = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        self.reply_bytes = b"".join(chunks)

    def run(self) -> None:
        self._reader.start()
        chunk = b"greedy\n" * 4096
        deadline = time.monotonic() + self.seconds
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                self.sent += self.sock.send(chunk)
            except TimeoutError:
                continue

    def finish(self) -> None:
        """Stop sending, then read for a moment longer and go."""
        self.join(10)
        time.sleep(0.2)
        self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.sock.close()


def udp_latencies(port: int, count: int) -> list[float]:
    """``count`` requests, one in flight; the latency of each (all must be answered)."""
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(5.0)
        for index in range(count):
            payload = b"probe%d" % index
            started = time.perf_counter()
            sock.send(payload)
            while sock.recv(200) != b"Hello, " + payload + b"!":
                pass
            samples.append(time.perf_counter() - started)
            time.sleep(0.001)
    return samples


@pytest.mark.parametrize("limited", [False, True], ids=["not-limited", "rate-limited"])
@pytest.mark.parametrize("path", list(PATHS))
def test_a_greedy_tcp_client_leaves_other_clients_their_turn(path: str, limited: bool) -> None:
    flags = ["--limit-exempt", "127.0.0.1/32", "--rate-limit", "1000"] if limited else []
    with serve(*flags, measured=False, env=PATHS[path]) as server:
        alone = udp_latencies(server.port, 300)
        greedy = Greedy(server.port, seconds=2.0)
        greedy.start()
        time.sleep(0.3)  # at full speed
        loaded = udp_latencies(server.port, 300)
        greedy.finish()
        code, log = server.stop(signal.SIGTERM)
    summary = parse_summary(log)
    udp, tcp = summary["udp"], summary["tcp"]
    replies = greedy.reply_bytes.splitlines()
    errors = replies.count(b"error: rate limited")
    p50_alone, p50_loaded = statistics.median(alone) * 1e3, statistics.median(loaded) * 1e3
    print(f"{path}, greedy {'rate-limited' if limited else 'not limited'}: UDP p50 alone "
          f"{p50_alone:.3f} ms, with greedy {p50_loaded:.3f} ms "
          f"(x{p50_loaded / p50_alone:.1f}, p99 {sorted(loaded)[296] * 1e3:.2f} ms); greedy "
          f"sent {greedy.sent // 7:,} lines, got {len(replies):,} replies ({errors} errors); "
          f"server tcp {tcp}")
    assert code == 0
    # Every request of the other client answered (udp_latencies raises otherwise), counted.
    assert udp["received"] == udp["replied"] == 600
    # The greedy client: each line the server took judged once, answered in order.
    assert replies[0] == b"Welcome!"
    assert replies[1] == b"Hello, greedy!"
    assert tcp["received"] == tcp["replied"] + tcp["rate_limited"] > 0
    assert len(replies) - 1 <= tcp["received"]
    assert errors <= tcp["rate_limited"]
    if limited:
        assert tcp["rate_limited"] >= 1
        assert tcp["rate_limited"] * 8 < tcp["replied"]  # one error a pause, not one a line
    else:
        assert tcp["rate_limited"] == 0
