"""Tier (d): ``udpkit serve dns``, and ``ping``/``bench --expect dns`` against it, as a
user runs them.  Mistakes in the options or the zone are one line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_zone import write_zone
from tests.processes import ServeProcess, run_udpkit, serve


@pytest.fixture(scope="module")
def zone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zone(tmp_path_factory.mktemp("zone"))


@pytest.fixture(scope="module")
def server(zone_file: Path) -> Iterator[ServeProcess]:
    with serve("dns", "--zone", str(zone_file)) as running:
        yield running


def test_ping_probes_a_dns_server_with_the_question_given(server: ServeProcess) -> None:
    result = run_udpkit("ping", f":{server.port}", "--expect", "dns", "-c", "3", "-i", "0.05",
                        "--payload", "www.example.com A")
    assert result.returncode == 0, result.stderr
    assert b"3 probes sent, 3 received, 0.0% loss" in result.stdout


def test_ping_over_tcp_frames_its_probes_with_dns_length_prefixes(
        server: ServeProcess) -> None:
    result = run_udpkit("ping", f":{server.port}", "--tcp", "--expect", "dns", "-c", "2",
                        "-i", "0.05", "--payload", "big.example.com TXT")
    assert result.returncode == 0, result.stderr
    assert b"over tcp" in result.stdout
    assert b"2 probes sent, 2 received, 0.0% loss" in result.stdout


@pytest.mark.parametrize("transport", [[], ["--tcp", "--connections", "2"]],
                         ids=["udp", "tcp"])
def test_bench_replays_a_query_file_and_matches_every_answer(
        server: ServeProcess, tmp_path: Path, transport: list[str]) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("; dnsperf's format\nwww.example.com A\nexample.com MX\n"
                       "nope.example.com AAAA\nbig.example.com TXT\nwww.example.org A\n")
    result = run_udpkit("bench", f":{server.port}", "--expect", "dns", "--query-file",
                        str(queries), "-n", "500", "--warmup", "0", "--concurrency", "8",
                        "--json", *transport)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["sent"] == figures["received"] == 500
    assert figures["wrong"] == figures["lost"] == 0


def test_the_apps_own_outcomes_are_in_the_workers_summary_and_metrics(zone_file: Path) -> None:
    """Malformed queries and rate-limited answers end in udpkit's counters as replies or
    no_reply; why is the app's to say, in the summary and ``/metrics``, and with
    ``--workers`` the supervisor adds up the workers' tallies (issue 17: they went to a
    log line at exit, and no further than each worker's)."""
    import socket
    import time
    import urllib.request

    with serve("dns", "--zone", str(zone_file), "--no-tcp", "--workers", "2",
               "--metrics", "127.0.0.1:0") as running:
        metrics = int(running.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)/").group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"\x12\x34\x00\x00\x00\x02" + bytes(6), ("127.0.0.1", running.port))
            assert sock.recv(512)[3] & 0x0F == 1  # FORMERR: two questions
            sock.sendto(b"\x12\x34\x80" + bytes(9), ("127.0.0.1", running.port))  # a response
            sock.sendto(b"\x12\x34\x00\x00\x00\x02" + bytes(6), ("127.0.0.1", running.port))
            assert sock.recv(512)[:2] == b"\x12\x34"
        text = ""
        deadline = time.monotonic() + 20
        while 'outcome="formerr"} 2.0' not in text and time.monotonic() < deadline:
            time.sleep(0.2)  # workers report every 0.5 s
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics",
                                        timeout=5) as response:
                text = response.read().decode()
        code, log = running.stop()
    assert code == 0
    assert 'udpkit_handler_outcomes_total{outcome="formerr"} 2.0' in text
    assert 'udpkit_handler_outcomes_total{outcome="response"} 1.0' in text
    assert 'udpkit_handler_outcomes_total{outcome="rrl_drop"} 0.0' in text
    assert "; handler(short=0 response=1 notimp=0 formerr=2 badvers=0 refused=0 " in log


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "dns"], b"udpkit serve: udpkit serve dns needs --zone FILE"),
    (["serve", "greeting", "--zone", "x.zone"],
     b"udpkit serve: --zone is an option of app 'dns', not of 'greeting'"),
    (["serve", "dns", "--zone", "/nonexistent.zone"], b"No such file or directory"),
    (["serve", "dns", "--zone", "ZONE", "--rrl-rate", "many"], b"--rrl-rate must be"),
    (["serve", "dns", "--zone", "ZONE", "--rrl-slip", "3"], b"--rrl-slip needs --rrl-rate"),
    (["serve", "dns", "--zone", "ZONE", "--tcp-framing", "line"],
     b"udpkit serve: app 'dns' over TCP needs --tcp-framing len16 (got line;"),
    (["serve", "dns", "--zone", "ZONE", "--tcp-framing", "raw"],
     b"udpkit serve: app 'dns' over TCP needs --tcp-framing len16 (got raw;"),
    (["bench", "--query-file", "ZONE"], b"--query-file needs an app with a query format"),
    (["bench", "--expect", "dns", "--query-file", "/nonexistent.txt"], b"No such file"),
    (["ping", "--expect", "dns", "--payload", "example.com BOGUS"],
     b"unknown DNS record type 'BOGUS'"),
    (["bench", "--expect", "dns", "--tcp", "--tcp-framing", "line"],
     b"--expect dns over TCP needs --tcp-framing len16"),
])
def test_mistakes_are_one_line_and_exit_2(zone_file: Path, args: list[str],
                                          message: bytes) -> None:
    result = run_udpkit(*[str(zone_file) if arg == "ZONE" else arg for arg in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one", "workers"])
def test_sighup_reloads_the_zone_and_keeps_the_old_one_if_the_new_file_is_broken(
        tmp_path: Path, workers: list[str]) -> None:
    """Issue 17: SIGHUP stopped ``serve dns`` (as SIGTERM); NSD and Knot reload their
    zones on it, and so does it now, every worker with ``--workers``."""
    import signal

    import dns.message
    import dns.query

    from tests.dns_zone import ZONE_TEXT

    zone = write_zone(tmp_path)
    query = dns.message.make_query("web.example.com.", "A")
    count = 2 if workers else 1
    who = [rf"worker {slot} \(pid \d+\): " for slot in (1, 2)] if workers else [""]
    with serve("dns", "--zone", str(zone), *workers) as running:
        def address() -> str:
            return str(dns.query.udp(query, "127.0.0.1", 5, running.port).answer[0][0])

        assert address() == "192.0.2.80"
        zone.write_text(ZONE_TEXT.replace("2026120101", "2026120102")
                        .replace("192.0.2.80", "192.0.2.81"))
        running.process.send_signal(signal.SIGHUP)
        for prefix in who:
            running.wait_for_line(prefix + r"Reloaded: zone example\.com\. serial 2026120102")
        assert all(address() == "192.0.2.81" for _ in range(4))
        zone.write_text(ZONE_TEXT + "broken IN A not-an-address\n")
        running.process.send_signal(signal.SIGHUP)
        for prefix in who:
            running.wait_for_line(prefix + r"Reload failed, serving what was loaded before: "
                                  r"--zone .* line \d+: .*; still serving serial 2026120102")
        assert all(address() == "192.0.2.81" for _ in range(4))
        code, log = running.stop()
    assert code == 0
    assert f"zone_reloads={count} zone_reload_errors={count})" in log
