"""Tier (c): open-loop pacing on loopback sockets, on both paths.

The C paced sender (``_fastpath.Pacer``) alone: every planned datagram arrives,
in order, each batch's actual send time is reported and none left before its
deadline; then ``udpkit bench --rate`` end to end on the C path and on the pure
path (``UDPKIT_NO_FASTPATH=1``), both reporting a lag for every measured send.
No assertion on how small the lag is: that is a benchmark
(benchmarks/bench_pacing.py).
"""

from __future__ import annotations

import socket
import sys
import time
from array import array
from collections.abc import Iterator

import pytest

from udpkit import _native
from udpkit.bench import BenchConfig, run_async
from udpkit.bench.udp_generator import enable_timestamps
from udpkit.core.pacing import PacingPolicy, batch_send_times, plan_batches
from udpkit.server import Server

needs_c = pytest.mark.skipif(_native.pacer_type() is None,
                             reason=f"no C extension: {_native.unavailable()}")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2.0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    sender.connect(receiver.getsockname())
    yield sender, receiver
    sender.close()
    receiver.close()


def _pacer(fd: int, policy: PacingPolicy, timerfd: bool = False) -> _native.Pacer:
    pacer_type = _native.pacer_type()
    assert pacer_type is not None
    return pacer_type(fd=fd, spin_ns=round(policy.spin * 1e9), max_batch=policy.max_batch,
                      timer_slack_ns=policy.timer_slack_ns, timerfd=timerfd)


@needs_c
@pytest.mark.parametrize("timerfd", [False, True], ids=["clock_nanosleep", "timerfd"])
@pytest.mark.parametrize("gap", [1e-3, 2e-6], ids=["1k-per-s", "500k-per-s-batched"])
def test_the_c_sender_sends_the_plan_in_order_and_never_early(
    pair: tuple[socket.socket, socket.socket], timerfd: bool, gap: float
) -> None:
    sender, receiver = pair
    policy = PacingPolicy(batch_bound=5e-6, max_batch=16)
    start = time.monotonic() + 0.01
    intended = [start + i * gap for i in range(40)]
    sizes = plan_batches(intended, policy)
    leaves = batch_send_times(intended, sizes)
    payloads = [b"n%d" % i for i in range(len(intended))]
    pacer = _pacer(sender.fileno(), policy, timerfd)
    try:
        pacer.submit(array("q", (round(t * 1e9) for t in leaves)).tobytes(),
                     array("i", sizes).tobytes(), payloads)
        got = [receiver.recv(64) for _ in payloads]
        actual = array("q")
        deadline = time.monotonic() + 2.0
        while len(actual) < len(sizes) and time.monotonic() < deadline:
            actual.frombytes(pacer.collect())
            time.sleep(0.001)
        assert pacer.stats()[:3] == (0, 0, 0)
    finally:
        pacer.close()
    assert got == payloads
    assert len(actual) == len(sizes)
    assert all(sent >= round(when * 1e9) for sent, when in zip(actual, leaves, strict=True))
    if gap > policy.batch_bound:
        assert sizes == [1] * len(intended)
    else:
        assert max(sizes) > 1


@needs_c
def test_the_c_thread_reads_the_replies_with_their_kernel_arrival_time(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    sender, receiver = pair
    assert enable_timestamps(sender)
    pacer = _pacer(sender.fileno(), PacingPolicy())
    try:
        at = round((time.monotonic() + 0.005) * 1e9)
        pacer.submit(array("q", [at]).tobytes(), array("i", [1]).tobytes(), [b"ping"])
        request, address = receiver.recvfrom(64)
        for reply in (b"one", b"", b"three"):
            receiver.sendto(reply + request, address)
        got: list[tuple[bytes, bytes, bytes, bytes]] = []
        deadline = time.monotonic() + 2.0
        while sum(len(item[1]) for item in got) < 3 * 4 and time.monotonic() < deadline:
            got.append(pacer.replies())
            time.sleep(0.005)
    finally:
        pacer.close()
    data = b"".join(item[0] for item in got)
    sizes, arrived, read = array("i"), array("q"), array("q")
    for item in got:
        sizes.frombytes(item[1])
        arrived.frombytes(item[2])
        read.frombytes(item[3])
    assert data == b"oneping" + b"ping" + b"threeping"
    assert list(sizes) == [7, 4, 9]
    assert all(a <= r for a, r in zip(arrived, read, strict=True))
    assert list(arrived) == sorted(arrived)
    assert arrived[0] >= at


@needs_c
def test_the_c_sender_refuses_a_plan_that_does_not_add_up(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    pacer = _pacer(pair[0].fileno(), PacingPolicy(max_batch=4))
    try:
        at = array("q", [0]).tobytes()
        with pytest.raises(ValueError, match="add up"):
            pacer.submit(at, array("i", [2]).tobytes(), [b"one"])
        with pytest.raises(ValueError, match="max_batch"):
            pacer.submit(at, array("i", [5]).tobytes(), [b"x"] * 5)  # over max_batch
        with pytest.raises(TypeError):
            pacer.submit(at, array("i", [1]).tobytes(), ["text"])  # type: ignore[list-item]
    finally:
        pacer.close()
    with pytest.raises(RuntimeError):
        pacer.submit(at, array("i", [1]).tobytes(), [b"x"])


@needs_c
def test_closing_a_sender_with_a_far_schedule_returns_promptly(
    pair: tuple[socket.socket, socket.socket]
) -> None:
    pacer = _pacer(pair[0].fileno(), PacingPolicy())
    far = round((time.monotonic() + 3600) * 1e9)
    pacer.submit(array("q", [far]).tobytes(), array("i", [1]).tobytes(), [b"later"])
    pacer.close()  # wakes within one sleep slice, drops the batch
    assert pacer.collect() == b""


@pytest.mark.parametrize("path", ["c", "python"])
async def test_open_loop_reports_the_lag_of_every_send_on_both_paths(
    server: Server, loopback: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "c" and _native.pacer_type() is None:
        pytest.skip(f"no C extension: {_native.unavailable()}")
    if path == "python":
        monkeypatch.setenv("UDPKIT_NO_FASTPATH", "1")
    config = BenchConfig(host=loopback, port=server.port, rate=2000.0, duration=0.3,
                         warmup=0.05, timeout=1.0, poisson=True, seed=3)
    result = await run_async(config)
    assert result.received == result.sent > 0
    assert result.summary.paced_by == path
    assert sum(result.summary.send_lag_us.values()) == result.sent
    document = result.as_dict()
    assert document["paced_by"] == path
    assert document["send_lag_us"]["count"] == result.sent
    assert set(document["send_lag_us"]) >= {"p50", "p99", "p99.9", "max", "histogram"}
    assert isinstance(document["generator_flagged"], bool)
    if sys.platform == "linux":  # the kernel timestamps arrivals: the wait to the read
        assert sum(result.summary.receive_lag_us.values()) == result.received
