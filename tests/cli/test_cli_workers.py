"""Tier (d): ``udpkit serve --workers`` in subprocesses: SO_REUSEPORT workers under a supervisor."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.processes import ServeProcess, parse_summary, run_udpkit, serve
from udpkit import Client

WHOAMI = '''
import os

def handler(request, peer):
    return b"pid=%d" % os.getpid()
'''

_PIDS = re.compile(r"Serving with (\d+) workers \(pids ([\d ]+)\)")


@pytest.fixture
def app_dir(tmp_path: pathlib.Path) -> str:
    (tmp_path / "whoami.py").write_text(WHOAMI)
    return str(tmp_path)


def wait_for_line(server: ServeProcess, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    return server.wait_for_line(pattern, timeout)


def worker_pids(server: ServeProcess) -> list[int]:
    match = wait_for_line(server, _PIDS.pattern)
    return [int(pid) for pid in match.group(2).split()]


def ask_from_new_sources(port: int, count: int) -> list[bytes]:
    """One request from each of ``count`` fresh sockets (fresh source ports spread
    over the workers, as the kernel hashes the 4-tuple); every one must be answered."""
    replies = []
    for _ in range(count):
        with Client("127.0.0.1", port, timeout=5.0, matcher="any") as client:
            replies.append(client.request(b"who"))
    return replies


def pids_answering(port: int, want: set[int], attempts: int = 400) -> set[int]:
    """Ask from fresh sources until every pid in ``want`` answered (bounded)."""
    seen: set[int] = set()
    for _ in range(attempts):
        [reply] = ask_from_new_sources(port, 1)
        seen.add(int(reply.removeprefix(b"pid=")))
        if want <= seen:
            break
    return seen


def test_two_workers_all_answer_over_udp_and_tcp(app_dir: str) -> None:
    with serve("--workers", "2", "--app-dir", app_dir, "whoami:handler") as server:
        pids = worker_pids(server)
        assert len(pids) == 2
        assert server.process.pid not in pids  # the supervisor serves no requests
        assert pids_answering(server.port, set(pids)) == set(pids)
        tcp = run_udpkit("send", "--tcp", "--expect", "any", "--port", str(server.port), "x")
        assert tcp.returncode == 0
        assert int(tcp.stdout.strip().removeprefix(b"pid=")) in pids
        code, _ = server.stop(signal.SIGTERM)
    assert code == 0


def test_a_killed_worker_is_restarted_and_the_port_stays_served(app_dir: str) -> None:
    with serve("--workers", "2", "--app-dir", app_dir, "whoami:handler") as server:
        victim, survivor = worker_pids(server)
        os.kill(victim, signal.SIGKILL)
        wait_for_line(server, rf"Worker 1 \(pid {victim}\) killed by SIGKILL; restarting")
        replacement = int(wait_for_line(server, r"Worker 1 restarted \(pid (\d+)\)").group(1))
        assert replacement not in (victim, survivor)
        # Every request from 50 new sources is answered, and the new worker takes part.
        replies = ask_from_new_sources(server.port, 50)
        assert all(reply.startswith(b"pid=") for reply in replies)
        assert pids_answering(server.port, {replacement, survivor}) == {replacement, survivor}
        code, log = server.stop(signal.SIGTERM)
    assert code == 0
    assert "Workers: 3 started, 1 restarts, 0 killed as hung" in log


def test_a_stopped_worker_is_found_hung_killed_and_replaced(app_dir: str) -> None:
    """Regression (issue 16, item 13): with one of two workers SIGSTOPped, about half
    of the clients were black-holed, and SIGTERM waited 8.6 s before killing it."""
    with serve("--workers", "2", "--worker-timeout", "2", "--app-dir", app_dir,
               "whoami:handler") as server:
        victim, survivor = worker_pids(server)
        os.kill(victim, signal.SIGSTOP)
        wait_for_line(server, rf"Worker 1 \(pid {victim}\) sent nothing for [\d.]+ s "
                              r"\(stopped or stuck\): killing it")
        wait_for_line(server, rf"Worker 1 \(pid {victim}\) killed by SIGKILL; restarting")
        replacement = int(wait_for_line(server, r"Worker 1 restarted \(pid (\d+)\)").group(1))
        replies = ask_from_new_sources(server.port, 50)
        assert all(reply.startswith(b"pid=") for reply in replies)
        assert pids_answering(server.port, {replacement, survivor}) == {replacement, survivor}
        code, log = server.stop(signal.SIGTERM)
    assert code == 0
    assert "Workers: 3 started, 1 restarts, 1 killed as hung" in log


def test_sigterm_does_not_wait_out_the_graceful_timeout_for_a_hung_worker(
    app_dir: str,
) -> None:
    """Stopped just before SIGTERM: the supervisor kills it once its heartbeat is
    overdue (draining workers go on reporting), not after the 30 s graceful timeout."""
    with serve("--workers", "2", "--worker-timeout", "2", "--app-dir", app_dir,
               "whoami:handler", "--graceful-timeout", "30") as server:
        victim, _ = worker_pids(server)
        os.kill(victim, signal.SIGSTOP)
        code, log = server.stop(signal.SIGTERM, timeout=15)  # would raise after 15 s
    assert code == 0
    assert "Workers: 2 started, 0 restarts, 1 killed as hung" in log


def test_sigterm_drains_every_worker_and_prints_one_merged_summary() -> None:
    with serve("--workers", "2") as server:
        worker_pids(server)
        answered = 0
        for index in range(40):
            with Client("127.0.0.1", server.port, timeout=5.0) as client:
                assert client.request(b"n%d" % index) == b"Hello, n%d!" % index
                answered += 1
        tcp = run_udpkit("send", "--tcp", "--port", str(server.port), "a", "b", "c")
        assert tcp.returncode == 0
        code, log = server.stop(signal.SIGTERM)
    assert code == 0
    assert "Received SIGTERM, stopping 2 workers gracefully" in log
    assert log.count("Stopped: UDP") == 2  # each worker drained and said what it did
    counters = parse_summary(log)
    assert counters["udp"]["received"] == counters["udp"]["replied"] == answered
    assert counters["tcp"]["received"] == counters["tcp"]["replied"] == 3


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_whole_group_is_one_graceful_stop_not_two(signum: int) -> None:
    """Ctrl-C (SIGINT), systemd's default KillMode (SIGTERM) and a closed terminal
    (SIGHUP) signal every process of the group: workers ignore SIGINT and SIGHUP and
    take repeated SIGTERMs as one, so they drain instead of being forced.

    Regression (issue 16, item 12): SIGHUP killed each worker and the supervisor at
    once ("Supervisor gone"), with no overall summary."""
    with serve("--workers", "2") as server:
        pids = worker_pids(server)
        for pid in (*pids, server.process.pid):
            os.kill(pid, signum)
        server.process.wait(timeout=30)
        code, log = server.stop()  # already exited: sends nothing
    assert code == 0
    assert f"Received {signal.Signals(signum).name}, stopping 2 workers gracefully" in log
    assert log.count("Stopped: UDP") == 2
    assert "Supervisor gone" not in log
    assert "Summary: UDP" in log


def test_a_second_instance_on_the_port_fails_clearly() -> None:
    with serve("--workers", "2") as server:
        worker_pids(server)
        port = str(server.port)
        with_workers = run_udpkit("serve", "--port", port, "--workers", "2")
        alone = run_udpkit("serve", "--port", port)
        udp_only = run_udpkit("serve", "--port", port, "--no-tcp", "--workers", "1")
        # It still serves, untouched.
        assert ask_from_new_sources(server.port, 5)
        server.stop(signal.SIGTERM)
    for result in (with_workers, alone, udp_only):
        assert result.returncode == 2
        assert b"Traceback" not in result.stderr
    assert b"already served by another `udpkit serve --workers`" in with_workers.stderr
    assert f"cannot bind UDP and TCP on 127.0.0.1:{port}: Address already in use".encode() \
        in alone.stderr


def test_workers_refuse_a_port_another_program_shares_with_so_reuseport() -> None:
    """A socket of the same user with SO_REUSEPORT could be joined silently: the
    supervisor binds without SO_REUSEPORT first, so it sees the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        result = run_udpkit("serve", "--port", str(port), "--workers", "2")
    assert result.returncode == 2
    assert f"127.0.0.1:{port}: Address already in use".encode() in result.stderr


def test_metrics_are_the_sum_of_the_workers() -> None:
    with serve("--workers", "2", "--metrics", "127.0.0.1:0") as server:
        metrics_port = int(wait_for_line(server, r"metrics on http://127\.0\.0\.1:(\d+)/").group(1))
        worker_pids(server)
        ask_from_new_sources(server.port, 30)
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # workers report every 0.5 s
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5) as response:
                text = response.read().decode()
            if 'udpkit_requests_received_total{transport="udp"} 30.0' in text:
                break
            time.sleep(0.2)
        server.stop(signal.SIGTERM)
    assert 'udpkit_requests_received_total{transport="udp"} 30.0' in text
    assert 'udpkit_requests_total{outcome="replied",transport="udp"} 30.0' in text
    assert "udpkit_workers 2.0" in text
    assert "udpkit_worker_restarts_total 0.0" in text
    assert 'udpkit_request_seconds_count 30.0' in text


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_workers_value_exits_two(value: str) -> None:
    result = run_udpkit("serve", "--port", "0", "--workers", value)
    assert result.returncode == 2
    assert b"--workers must be a number >= 1 or 'auto'" in result.stderr


def test_workers_auto_starts_one_per_cpu() -> None:
    with serve("--workers", "auto") as server:
        pids = worker_pids(server)
        server.stop(signal.SIGTERM)
    assert len(pids) == len(os.sched_getaffinity(0))


def test_a_bad_app_fails_before_any_worker_starts() -> None:
    result = run_udpkit("serve", "--port", "0", "--workers", "2", "no_such_module:app")
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr


WITHOUT_FCNTL = textwrap.dedent(
    """
    import sys
    # As on a platform without them: importing either fails.
    sys.modules["fcntl"] = sys.modules["resource"] = None
    import udpkit.cli, udpkit.server, udpkit.server.supervisor
    sys.argv = ["udpkit", *sys.argv[1:]]
    udpkit.cli.main()
    """
)


def run_without_fcntl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_FCNTL, *args], capture_output=True,
                          text=True, timeout=30, check=False)


def test_without_fcntl_everything_imports_and_serve_help_works() -> None:
    """Regression: ``import fcntl`` at the top of the workers module made every
    ``udpkit`` command fail at import on a platform without it."""
    result = run_without_fcntl("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "--workers" in result.stdout


def test_without_fcntl_workers_say_not_supported_in_one_line() -> None:
    result = run_without_fcntl("serve", "--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "--workers" in line]
    assert "--workers is not supported on this platform: it needs flock (fcntl)" in line
