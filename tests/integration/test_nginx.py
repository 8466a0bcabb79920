"""Tier (e): nginx's stream module in front of three ``udpkit serve`` instances.

nginx balances UDP (``proxy_responses 1``) and TCP (``proxy_protocol on``)
over three udpkit servers on loopback; ``udpkit bench`` runs through it, one
instance is killed with SIGKILL mid-run, and the test measures the requests
lost during the failover and bounds them by what the settings allow.

The loss bound, from the settings below:

* ``max_fails=1 fail_timeout=30s`` with a shared ``zone``: the first failed
  exchange with the dead instance (ICMP port unreachable for UDP, refused
  connect for TCP) marks it down for every nginx worker for 30 s, longer than
  the test, so it is not probed again while we measure.
* UDP: what is lost is what was in flight to the dead instance, at most the
  bench's ``concurrency`` (32) - the kernel drops its socket's queue - plus
  the datagrams nginx sends there before it sees the first error: one per
  nginx session already bound to it, again at most ``concurrency``.  So the
  loss is at most ``2 * concurrency`` requests; each lost request is
  reported after the bench's 1 s timeout, not retried.
* TCP: the bench keeps ``connections`` (6) pipelined connections, each nginx
  relays to one instance; the connections to the killed one close with at
  most ``depth`` (8) requests in flight each, and the bench does not
  reconnect, so the loss is at most ``connections * depth`` and the others
  go on.

Then a second, short run must be answered 100%: nginx no longer sends
anything to the dead instance.  Nothing here is timed against the machine's
speed; the bounds are counts.

Everything listens on 127.0.0.1 (and the PROXY test's client on 127.0.0.2);
nginx runs in the foreground with its pid file, logs and temporary files in a
temporary directory; every process is started here and killed by its PID.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

import udpkit
from tests.processes import ServeProcess, free_port, serve
from udpkit.bench import BenchResult

NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if pathlib.Path("/usr/sbin/nginx").exists() else None
)
STREAM_MODULE = pathlib.Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def _stream_available() -> bool:
    if NGINX is None:
        return False
    if STREAM_MODULE.exists():
        return True
    version = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=False)
    return "--with-stream" in version.stderr and "--with-stream=dynamic" not in version.stderr


pytestmark = pytest.mark.skipif(
    not _stream_available(),
    reason="nginx with the stream module is not installed "
    "(apt-get install nginx libnginx-mod-stream; .ci/run does)",
)

CONCURRENCY = 32
TCP_CONNECTIONS = 6
TCP_DEPTH = 8
FAIL_TIMEOUT = 30  # seconds; longer than any run here, so a dead instance is never re-probed


def nginx_config(directory: pathlib.Path, port: int, backends: list[int]) -> str:
    load = f"load_module {STREAM_MODULE};" if STREAM_MODULE.exists() else ""
    servers = "\n".join(
        f"    server 127.0.0.1:{backend} max_fails=1 fail_timeout={FAIL_TIMEOUT}s;"
        for backend in backends
    )
    return f"""
{load}
daemon off;
master_process on;
worker_processes 2;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 1024; }}
stream {{
  log_format relay '$remote_addr:$remote_port $protocol $upstream_addr $status';
  access_log {directory}/access.log relay;
  upstream udpkit_udp {{
    zone udpkit_udp 64k;
{servers}
  }}
  upstream udpkit_tcp {{
    zone udpkit_tcp 64k;
{servers}
  }}
  server {{
    listen 127.0.0.1:{port} udp;
    proxy_pass udpkit_udp;
    proxy_responses 1;
    proxy_timeout 2s;
  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_pass udpkit_tcp;
    proxy_protocol on;
    proxy_connect_timeout 2s;
    proxy_timeout 60s;
  }}
}}
"""


@contextmanager
def nginx(directory: pathlib.Path, backends: list[int]) -> Iterator[int]:
    """Run nginx in the foreground in front of ``backends``; yield its port."""
    assert NGINX is not None
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, backends))
    command = [NGINX, "-c", str(config), "-p", str(directory), "-e", str(directory / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown, workers included
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@contextmanager
def cluster(directory: pathlib.Path, *args: str) -> Iterator[tuple[int, list[ServeProcess]]]:
    """Three ``udpkit serve`` instances behind nginx: (nginx's port, the instances)."""
    with ExitStack() as stack:
        instances = [
            stack.enter_context(
                serve("--proxy-protocol", "--proxy-trusted", "127.0.0.1/32", *args)
            )
            for _ in range(3)
        ]
        port = stack.enter_context(nginx(directory, [i.port for i in instances]))
        yield port, instances
        for instance in instances:
            if instance.process.poll() is None:
                instance.stop(signal.SIGTERM)


def bench_with_kill(
    port: int, victim: ServeProcess, *, kill_after: float, **options: Any
) -> BenchResult:
    """Run the bench through nginx; SIGKILL ``victim`` after ``kill_after`` seconds."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            lambda: udpkit.bench("127.0.0.1", port, duration=6.0, warmup=0.5, timeout=1.0,
                                 interval=0.5, **options)
        )
        time.sleep(0.5 + kill_after)
        assert not running.done(), running.result()
        victim.process.kill()
        victim.process.wait(10)
        return running.result(timeout=60)


def report(label: str, result: BenchResult) -> None:
    series = " ".join(f"{i.received}/{i.sent}" for i in result.summary.intervals)
    print(f"\n{label}: sent={result.sent} received={result.received} lost={result.lost} "
          f"rps={result.throughput:.0f}; per 0.5 s (received/sent): {series}")


def test_udp_through_nginx_survives_a_killed_instance(tmp_path: pathlib.Path) -> None:
    with cluster(tmp_path) as (port, instances):
        before = udpkit.bench("127.0.0.1", port, requests=300, warmup=0, concurrency=8)
        assert before.lost == 0
        during = bench_with_kill(port, instances[1], transport="udp", kill_after=2.0,
                                 concurrency=CONCURRENCY)
        after = udpkit.bench("127.0.0.1", port, duration=2.0, warmup=0,
                             concurrency=CONCURRENCY)
        report("UDP failover", during)
        report("UDP after", after)
        survivors = [instances[0], instances[2]]
        for instance in survivors:
            assert instance.process.poll() is None
    assert 0 < during.lost <= 2 * CONCURRENCY, during.lost
    assert during.received > 10 * during.lost  # the service went on
    last = during.summary.intervals[-3:]
    assert sum(i.lost for i in last) == 0  # recovered well before the end of the run
    assert after.lost == 0
    assert after.received == after.sent > 0


def test_tcp_through_nginx_survives_a_killed_instance(tmp_path: pathlib.Path) -> None:
    with cluster(tmp_path) as (port, instances):
        during = bench_with_kill(port, instances[1], transport="tcp", kill_after=2.0,
                                 concurrency=TCP_CONNECTIONS * TCP_DEPTH,
                                 connections=TCP_CONNECTIONS, depth=TCP_DEPTH)
        after = udpkit.bench("127.0.0.1", port, transport="tcp", duration=2.0, warmup=0,
                             connections=TCP_CONNECTIONS, depth=TCP_DEPTH,
                             concurrency=TCP_CONNECTIONS * TCP_DEPTH)
        report("TCP failover", during)
        report("TCP after", after)
    assert during.lost <= TCP_CONNECTIONS * TCP_DEPTH, during.lost
    assert during.summary.intervals[-1].received > 0  # connections to the others went on
    assert after.lost == 0
    assert after.received == after.sent > 0


def test_proxy_protocol_through_nginx_shows_the_real_client(tmp_path: pathlib.Path) -> None:
    """nginx connects from 127.0.0.1; the client from 127.0.0.2: the servers'
    access logs and the handler's peer must name 127.0.0.2, over TCP only."""
    with cluster(tmp_path, "--access-log") as (port, instances):
        client_ports = []
        for _ in range(6):  # round robin: every instance gets connections
            with socket.create_connection(("127.0.0.1", port), timeout=10,
                                          source_address=("127.0.0.2", 0)) as conn:
                client_ports.append(conn.getsockname()[1])
                stream = conn.makefile("rwb")
                assert stream.readline() == b"Welcome!\n"
                stream.write(b"Michael\n")
                stream.flush()
                assert stream.readline() == b"Hello, Michael!\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.2", 0))
            udp.settimeout(10)
            udp.sendto(b"Tracy", ("127.0.0.1", port))
            assert udp.recv(100) == b"Hello, Tracy!"
        logs = []
        for instance in instances:
            _, rest = instance.stop(signal.SIGTERM)
            logs.append("\n".join(instance.log) + "\n" + rest)
    everything = "\n".join(logs)
    for client_port in client_ports:
        assert f"Received from 127.0.0.2:{client_port} over tcp" in everything
    # UDP: nginx cannot pass the client on; the servers see nginx's address.
    udp_lines = [line for line in everything.splitlines() if "over udp" in line]
    assert udp_lines
    assert all("Received from 127.0.0.1:" in line for line in udp_lines)
    # Round robin over a shared zone: each instance got connections, and saw the real client.
    assert all(any(f"127.0.0.2:{p} over tcp" in log for p in client_ports) for log in logs)
