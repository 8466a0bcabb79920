"""Tier (d): ``udpkit ping`` and ``udpkit bench`` as a user runs them, in subprocesses.

Exit codes: 0 when any reply came, 1 when none did or the port refused, 2 on
bad usage; errors are one line with no traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.processes import ServeProcess, run_udpkit, serve

UDPKIT = [sys.executable, "-m", "udpkit"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    """``udpkit serve`` (greeting, UDP and TCP) on a free port of 127.0.0.1."""
    with serve("--host", "127.0.0.1") as running:
        yield running


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def assert_one_line_error(stderr: bytes, needle: str) -> None:
    message = text(stderr).strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert needle in message


# ------------------------------------------------------------------------ ping


@pytest.mark.parametrize("transport", [[], ["--tcp"]], ids=["udp", "tcp"])
def test_ping_counts_and_summarises(server: ServeProcess, transport: list[str]) -> None:
    done = run_udpkit("ping", f"127.0.0.1:{server.port}", "-c", "3", "-i", "0.05", *transport)
    out = text(done.stdout)
    assert done.returncode == 0, text(done.stderr)
    for seq in range(3):
        assert f"seq={seq} time=" in out
    assert "3 probes sent, 3 received, 0.0% loss, 0 duplicates, 0 out of order" in out
    assert "rtt min/avg/max/mdev = " in out
    assert "jitter" in out


def test_ping_refused_port_exits_1(closed_port: int) -> None:
    done = run_udpkit("ping", f"127.0.0.1:{closed_port}", "-c", "2", "-i", "0.05")
    assert done.returncode == 1
    assert "refused" in text(done.stdout)
    assert "2 probes sent, 0 received, 100.0% loss" in text(done.stdout)
    tcp = run_udpkit("ping", f"127.0.0.1:{closed_port}", "-c", "1", "--tcp")
    assert tcp.returncode == 1
    assert_one_line_error(tcp.stderr, "refused")


def test_ping_timeout_when_nobody_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        done = run_udpkit("ping", f"127.0.0.1:{port}", "-c", "2", "-i", "0.05",
                          "--timeout", "0.2")
    assert done.returncode == 1
    assert "seq=0 timeout" in text(done.stdout)
    assert "100.0% loss" in text(done.stdout)


def test_ping_ctrl_c_prints_the_summary(server: ServeProcess) -> None:
    process = subprocess.Popen(
        [*UDPKIT, "ping", f"127.0.0.1:{server.port}", "-i", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        seen = 0
        while seen < 3:
            line = process.stdout.readline()
            assert line, "ping stopped early"
            seen += b"time=" in line
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, text(err)
    assert "udpkit ping statistics" in text(out)
    assert "Traceback" not in text(err)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-such-host.invalid:9"], "cannot resolve"),
        (["127.0.0.1:9", "--payload", "no number"], "{seq}"),
        (["9999"], "write a port as :9999"),
        (["127.0.0.1:9", "--expect", "(bad{seq}"], "--expect"),
    ],
)
def test_ping_bad_input_exits_2(args: list[str], needle: str) -> None:
    done = run_udpkit("ping", *args, "-c", "1")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, needle)


# ----------------------------------------------------------------------- bench


def test_bench_prints_the_table(server: ServeProcess) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "-d", "0.5", "--warmup", "0.1",
                      "--concurrency", "8")
    out = text(done.stdout)
    assert done.returncode == 0, text(done.stderr)
    for figure in ("throughput", "lost (timed out)", "duplicates", "reordered",
                   "late (after timeout)", "wrong replies", "latency p50", "latency p99.99",
                   "latency max"):
        assert figure in out


def test_bench_json_tcp(server: ServeProcess) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--tcp", "--connections", "2",
                      "--depth", "4", "-d", "0.5", "--warmup", "0.1", "--json")
    assert done.returncode == 0, text(done.stderr)
    document = json.loads(done.stdout)
    assert document["target"]["transport"] == "tcp"
    assert document["received"] > 0
    assert document["received"] + document["lost"] == document["sent"]
    assert document["wrong"] == 0
    assert document["latency_us"]["p99.99"] >= document["latency_us"]["p50"] > 0


def test_bench_open_loop_json(server: ServeProcess) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--rate", "1000", "--poisson",
                      "--seed", "3", "-n", "300", "--warmup", "0", "--json")
    assert done.returncode == 0, text(done.stderr)
    document = json.loads(done.stdout)
    assert document["mode"] == "open"
    assert document["sent"] == document["received"] == 300
    assert document["latency_from"] == "intended send time"
    assert isinstance(document["fell_behind"], bool)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib (the plot extra) not installed")
def test_bench_writes_a_png(server: ServeProcess, tmp_path: pathlib.Path) -> None:
    chart = tmp_path / "bench.png"
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "-d", "0.5", "--warmup", "0.1",
                      "--plot", str(chart), "--json")
    assert done.returncode == 0, text(done.stderr)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_ctrl_c_still_reports(server: ServeProcess) -> None:
    process = subprocess.Popen(
        [*UDPKIT, "bench", f"127.0.0.1:{server.port}", "-d", "60", "--warmup", "0.2",
         "--concurrency", "4", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, text(err)  # interrupted: partial figures
    document = json.loads(out)
    assert document["interrupted"] is True
    assert document["received"] > 0
    assert document["duration_s"] < 30
    assert "Traceback" not in text(err)


def test_bench_refused_exits_1(closed_port: int) -> None:
    for transport in ([], ["--tcp"]):
        done = run_udpkit("bench", f"127.0.0.1:{closed_port}", "-d", "0.5", "--warmup", "0",
                          *transport)
        assert done.returncode == 1
        assert_one_line_error(done.stderr, "refused")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-such-host.invalid:9"], "cannot resolve"),
        (["127.0.0.1:9", "--rate", "0"], "--rate"),
        (["127.0.0.1:9", "--rate", "-10"], "--rate"),
        (["127.0.0.1:9", "--payload", "constant"], "{seq}"),
        (["127.0.0.1:9", "--payload", "{seq"], "template"),
        (["127.0.0.1:9", "--expect", "no placeholder"], "{seq}"),
        (["127.0.0.1:9", "--expect", "(unclosed{seq}"], "--expect"),
        (["127.0.0.1:9", "--concurrency", "0"], "--concurrency"),
        (["127.0.0.1:9", "--size", "70000"], "--size"),
    ],
)
def test_bench_bad_input_exits_2(args: list[str], needle: str) -> None:
    done = run_udpkit("bench", *args, "-d", "0.5")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, needle)


def test_import_udpkit_needs_no_optional_packages() -> None:
    code = (
        "import sys, udpkit; r = udpkit.bench; "
        "print(sorted(m for m in ('rich', 'hdrh', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                          check=True)
    assert done.stdout.strip() == b"[]"


def test_bench_strict_exits_4_exactly_when_the_generator_flags_itself(
    server: ServeProcess,
) -> None:
    """Issue 15: `--strict` turns the self-check into the exit code; the JSON says why."""
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--rate", "500", "-d", "0.4",
                      "--warmup", "0.1", "--strict", "--json")
    assert done.returncode in (0, 4), text(done.stderr)
    document = json.loads(done.stdout)
    assert document["send_lag_us"]["count"] == document["sent"]
    assert document["generator_flag_fraction"] == 0.5
    flagged = document["generator_flagged"]
    assert (done.returncode == 4) == flagged
    if flagged:
        assert_one_line_error(done.stderr.splitlines()[-1], "--strict")
    lenient = run_udpkit("bench", f"127.0.0.1:{server.port}", "--rate", "500", "-d", "0.2",
                         "--warmup", "0.1")
    assert lenient.returncode == 0, text(lenient.stderr)
    assert "send lag p50 / p99 / p99.9 / max" in text(lenient.stdout)
