"""Tier (e): Locust (nobody here wrote it) drives ``udpkit.locust`` users in its own
distributed mode, a master and two workers on loopback, against ``udpkit serve``;
what Locust counted must be what the server counted, request for request."""

from __future__ import annotations

import csv
import importlib.util
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.processes import _env, parse_summary, serve

# Never import locust here: it monkey-patches the whole process with gevent.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="the 'locust' extra is not installed")

LOCUSTFILE = textwrap.dedent('''
    import os

    from locust import constant

    from udpkit.locust import TcpLineUser, UdpUser


    class Udp(UdpUser):
        payload = "udp {seq}"
        timeout = 5.0
        wait_time = constant(0.01)


    class Tcp(TcpLineUser):
        payload = "tcp {seq}"
        timeout = 5.0
        wait_time = constant(0.01)


    class Wrong(UdpUser):
        """Expects an echo from a greeting server: every reply is a mismatch."""
        expect = "echo"
        request_name = "wrong"
        timeout = 0.3
        wait_time = constant(0.2)


    class TcpWrong(TcpLineUser):
        """The same over TCP: the reply line is a mismatch at once."""
        expect = "echo"
        request_name = "wrong"
        timeout = 5.0
        wait_time = constant(0.2)


    class Refused(UdpUser):
        """A closed port: ICMP port unreachable, every request refused."""
        target = "127.0.0.1:" + os.environ["CLOSED_PORT"]
        request_name = "refused"
        wait_time = constant(0.2)


    class Silent(UdpUser):
        """A port that takes datagrams and never answers: every request times out."""
        target = "127.0.0.1:" + os.environ["SILENT_PORT"]
        request_name = "silent"
        timeout = 0.2
        retries = 1
        wait_time = constant(0.1)
''')


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def locust(*args: str, cwd: pathlib.Path, silent_port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", "locustfile.py", *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**_env(), "SILENT_PORT": str(silent_port),
                                 "CLOSED_PORT": str(closed_port())})


@pytest.mark.timeout(120)
def test_locust_master_and_two_workers_count_what_the_server_counts(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    master_port = free_tcp_port()
    with serve("--host", "127.0.0.1") as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent_port = silent.getsockname()[1]
        master = locust(
            "--headless", "--master", "--expect-workers", "2",
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
            "--host", f"127.0.0.1:{server.port}", "-u", "12", "-r", "12", "--run-time", "2s",
            "--stop-timeout", "5", "--csv", str(tmp_path / "run"), "--only-summary",
            cwd=tmp_path, silent_port=silent_port)
        workers = [locust("--worker", "--master-host", "127.0.0.1",
                          "--master-port", str(master_port), cwd=tmp_path,
                          silent_port=silent_port)
                   for _ in range(2)]
        try:
            master_log = master.communicate(timeout=60)[0].decode()
            for worker in workers:
                worker.communicate(timeout=30)
        finally:
            for process in (master, *workers):
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        code, log = server.stop()
    assert master.returncode == 1, master_log  # Locust's exit code when a request failed
    assert code == 0
    counted = parse_summary(log)
    with open(tmp_path / "run_stats.csv", newline="") as file:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}
    udp, tcp = rows[("UDP", "request")], rows[("TCP", "request")]
    wrong, silent_row = rows[("UDP", "wrong")], rows[("UDP", "silent")]
    tcp_wrong, refused = rows[("TCP", "wrong")], rows[("UDP", "refused")]
    assert int(udp["Failure Count"]) == int(tcp["Failure Count"]) == 0, master_log
    assert int(udp["Request Count"]) > 0
    assert int(tcp["Request Count"]) > 0
    assert int(wrong["Request Count"]) == int(wrong["Failure Count"]) > 0
    assert int(silent_row["Request Count"]) == int(silent_row["Failure Count"]) > 0
    assert int(tcp_wrong["Request Count"]) == int(tcp_wrong["Failure Count"]) > 0
    assert int(refused["Request Count"]) == int(refused["Failure Count"]) > 0
    # every request that reached the server is one Locust counted, and no other
    udp_sent = int(udp["Request Count"]) + int(wrong["Request Count"])
    assert udp_sent == counted["udp"]["received"] == counted["udp"]["replied"]
    tcp_sent = int(tcp["Request Count"]) + int(tcp_wrong["Request Count"])
    assert tcp_sent == counted["tcp"]["received"] == counted["tcp"]["replied"]
    with open(tmp_path / "run_failures.csv", newline="") as file:
        errors = {(row["Method"], row["Name"]): row["Error"] for row in csv.DictReader(file)}
    assert errors[("UDP", "wrong")].startswith("UnexpectedReply(")
    assert errors[("TCP", "wrong")].startswith("UnexpectedReply(")
    assert errors[("UDP", "silent")].startswith("RequestTimeout(")
    assert errors[("UDP", "refused")].startswith("RequestRefused(")
    assert "2 workers connected" in master_log
