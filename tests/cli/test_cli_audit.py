"""Tier (d): ``udpkit audit`` as a user runs it, in subprocesses, against ``udpkit serve``."""

from __future__ import annotations

import json

import pytest

from tests.processes import run_udpkit, serve

FAST = ("--sizes", "0,1,2,4,1024,1472", "--probes", "2", "--timeout", "0.3",
        "--oversize", "9000,65507", "--step-duration", "0.2")


def test_quick_audit_of_udpkits_greeting_server() -> None:
    with serve("--no-tcp") as server:
        result = run_udpkit("audit", "--quick", f"127.0.0.1:{server.port}")
        server.stop()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"udpkit audit of 127.0.0.1:{server.port}" in out
    assert "       1       2        2           18     9.00x     1.00x" in out
    assert "empty datagram           2 sent, no reply (dropped)" in out
    assert "oversized, 65507 bytes   2 sent, no reply (dropped)" in out
    assert "Worst bandwidth amplification: 9.00x with 1-byte requests" in out
    assert "RFC 8085 s3.1 (reply no larger than an unauthenticated request): AMPLIFIES" in out
    assert "RFC 9000 s8.1 (at most 3x the bytes received before validation): EXCEEDS" in out
    assert "Rate limit (one source): UNLIMITED" in out  # loopback is exempt by default


def test_json_report_of_an_echo_server() -> None:
    with serve("echo", "--no-tcp", "--max-request", "65507") as server:
        result = run_udpkit("audit", "--json", *FAST, "--rates", "100",
                            f"127.0.0.1:{server.port}")
        server.stop()
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["target"] == f"127.0.0.1:{server.port}"
    factors = {row["size"]: row["byte_factor"] for row in report["sizes"]}
    assert factors == {0: None, 1: 1.0, 2: 1.0, 4: 1.0, 1024: 1.0, 1472: 1.0}
    assert [row["replies"] for row in report["oversize"]] == [2, 2]
    assert report["max_byte_factor"] == 1.0
    assert {v["rule"].split(" (")[0]: v["status"] for v in report["verdicts"]} == {
        "RFC 8085 s3.1": "ok", "RFC 9000 s8.1": "ok", "Rate limit": "unlimited"}


def test_the_audit_reports_where_the_rate_limit_kicks_in() -> None:
    with serve("--no-tcp", "--rate-limit", "100", "--rate-burst", "50",
               "--limit-exempt", "none") as server:
        result = run_udpkit("audit", *FAST, "--sizes", "8", "--no-empty", "--oversize", "",
                            "--rates", "20,2000", "--step-duration", "0.5",
                            f"127.0.0.1:{server.port}")
        server.stop()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "Rate limit (one source): LIMITED: kicks in between 20 and 2000 req/s" in out


def test_a_closed_port_exits_one_saying_refused(closed_udp_port: int) -> None:
    result = run_udpkit("audit", "--quick", f"127.0.0.1:{closed_udp_port}")
    err = result.stderr.decode()
    assert result.returncode == 1
    assert err == (f"udpkit audit: refused: port unreachable over udp (nothing listens there) "
                   f"(127.0.0.1:{closed_udp_port})\n")
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-host.invalid:9999",), "cannot resolve host 'no-such-host.invalid'"),
        (("127.0.0.1:0",), "port must be a number in 1..65535"),
        (("127.0.0.1:http",), "port must be a number in 1..65535"),
        (("9999",), "write a port as :9999"),
        (("--sizes", "1,x", "127.0.0.1:9999"), "--sizes takes comma-separated byte counts"),
        (("--oversize", "70000", "127.0.0.1:9999"), "request sizes must be in 0..65507"),
        (("--rates", "1000,10", "127.0.0.1:9999"), "--rates must rise"),
        (("--probes", "0", "127.0.0.1:9999"), "--probes must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(args: tuple[str, ...], message: str) -> None:
    result = run_udpkit("audit", *args)
    err = result.stderr.decode()
    assert result.returncode == 2
    assert err.startswith("udpkit audit: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
