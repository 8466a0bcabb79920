"""Tier (e): programs nobody here wrote, against udpkit and udpkit against them.

The tutorial's own clients and server (ported to Python 3), OpenBSD netcat and
socat.  Tests skip with a reason when a tool is missing; CI installs them.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import run_udpkit, serve

pytestmark = pytest.mark.peers

TUTORIAL = Path(__file__).parent / "tutorial"
needs_nc = pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")


def run(args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=input, capture_output=True, timeout=20, check=False)


def test_tutorial_udp_client_against_udpkit() -> None:
    with serve() as server:
        result = run([sys.executable, str(TUTORIAL / "udp_client.py"), str(server.port)])
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"


def test_tutorial_tcp_client_against_udpkit_raw_framing() -> None:
    with serve("--tcp-framing", "raw") as server:
        result = run([sys.executable, str(TUTORIAL / "tcp_client.py"), str(server.port)])
        code, log = server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
    assert code == 0
    assert "TCP received=3 replied=3" in log  # 'exit' closed it; it is not a request


def test_udpkit_send_against_the_tutorial_udp_server() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(TUTORIAL / "udp_server.py"), str(port), "3"],
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(b"Bind UDP on")
        result = run_udpkit("send", "--port", str(port), "Michael", "Tracy", "Sarah")
        log, _ = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
    assert log.count(b"Received from 127.0.0.1:") == 3


@needs_nc
def test_nc_udp_sees_clean_lines() -> None:
    with serve() as server:
        result = run(["nc", "-u", "-w", "1", "127.0.0.1", str(server.port)], input=b"Michael\n")
        server.stop()
    assert result.stdout == b"Hello, Michael!\n"


@needs_nc
def test_nc_tcp_line_framing() -> None:
    with serve() as server:
        result = run(["nc", "-q", "2", "127.0.0.1", str(server.port)],
                     input=b"Michael\nTracy\nSarah\nexit\n")
        server.stop()
    assert result.stdout == b"Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\n"


@needs_socat
def test_socat_udp_and_tcp() -> None:
    with serve() as server:
        udp = run(["socat", "-T", "2", "-", f"UDP:127.0.0.1:{server.port}"], input=b"Tracy\n")
        tcp = run(["socat", "-T", "2", "-", f"TCP:127.0.0.1:{server.port}"],
                  input=b"Tracy\r\nexit\r\n")
        server.stop()
    assert udp.stdout == b"Hello, Tracy!\n"
    assert tcp.stdout == b"Welcome!\nHello, Tracy!\n"


@needs_socat
def test_udpkit_client_against_a_socat_echo_service() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    echo = subprocess.Popen(["socat", "-T", "10", f"UDP-RECVFROM:{port},bind=127.0.0.1,fork",
                             "EXEC:cat"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        result = run_udpkit("send", "--expect", "echo", "--port", str(port), "one", "two")
        while result.returncode != 0 and time.monotonic() < deadline:  # socat still starting
            time.sleep(0.1)
            result = run_udpkit("send", "--expect", "echo", "--port", str(port), "one", "two")
    finally:
        echo.terminate()
        echo.wait(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\n"


needs_sockperf = pytest.mark.skipif(shutil.which("sockperf") is None,
                                    reason="sockperf is not installed")
REFLECTOR = Path(__file__).resolve().parents[2] / "benchmarks"


@needs_sockperf
@pytest.mark.parametrize("busy_poll", ["off", "50us"])
def test_sockperf_ping_pong_against_udpkit(busy_poll: str) -> None:
    """sockperf's own client (Mellanox) ping-pongs with a udpkit server, busy-polling or
    not, through benchmarks/sockperf_reflector.py (what bench_latency.py measures):
    every message answered, none dropped, the server's summary agrees."""
    with serve("--no-tcp", "--busy-poll", busy_poll, "--app-dir", str(REFLECTOR),
               "sockperf_reflector:handler") as server:
        if busy_poll != "off":
            server.wait_for_line(r"UDP busy polling: 50 us")
        result = run(["sockperf", "ping-pong", "-i", "127.0.0.1", "-p", str(server.port),
                      "-t", "1"])
        code, log = server.stop()
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, out
    assert "# dropped messages = 0" in out
    total = re.search(r"Total (\d+) observations", out)
    assert total is not None, out
    observations = int(total.group(1))
    assert observations > 0
    assert code == 0
    summary = re.search(r"UDP received=(\d+) replied=(\d+)", log)
    assert summary is not None
    assert int(summary.group(2)) >= observations
