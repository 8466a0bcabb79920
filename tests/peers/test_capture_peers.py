"""Tier (e): capture files and tcpdump, a program nobody here wrote.

* tcpdump captures on ``lo`` while the tutorial's UDP client talks to
  ``udpkit serve``; ``udpkit bench --replay`` replays that file against a fresh
  server (needs root and tcpdump, skips without them);
* ``udpkit proxy --pcap`` records UDP and TCP; ``tcpdump -r`` reads the file
  (headers, checksums, the TCP stream), and ``bench --replay`` replays it.

tcpdump starts with ``--immediate-mode`` (otherwise packets wait in the
kernel's ring for a block timeout and a quick stop loses them), is awaited by
its "listening on" line and stopped by SIGINT to its PID; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.processes import UDPKIT, parse_summary, run_udpkit, serve

pytestmark = pytest.mark.peers

TUTORIAL = Path(__file__).parent / "tutorial"
TCPDUMP = shutil.which("tcpdump")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root")


def _lines_of(stream: object, lines: queue.Queue[str | None]) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    lines.put(None)


def _wait_for(lines: queue.Queue[str | None], pattern: str, seen: list[str],
              timeout: float = 15.0) -> re.Match[str]:
    compiled = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if match := compiled.search(line):
            return match
    raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(seen))


@contextmanager
def tcpdump_on_lo(path: Path, port: int, *options: str) -> Iterator[list[str]]:
    """tcpdump writing ``udp port PORT`` on lo to ``path``; yields its stderr lines."""
    assert TCPDUMP is not None
    process = subprocess.Popen(
        [TCPDUMP, "-i", "lo", "--immediate-mode", "-U", "-n", *options, "-w", str(path),
         "udp", "port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines_of, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        _wait_for(lines, r"listening on lo", seen)
        yield seen
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        _wait_for(lines, r"packets captured", seen, timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()


@contextmanager
def proxy_recording(upstream: int, path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``udpkit proxy --pcap PATH`` in front of 127.0.0.1:UPSTREAM; yields it and its port."""
    process = subprocess.Popen(
        [*UDPKIT, "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}",
         "--pcap", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines_of, args=(process.stderr, lines), daemon=True)
    reader.start()
    try:
        match = _wait_for(lines, r"Proxy \S+ on 127\.0\.0\.1:(\d+)", [])
        yield process, int(match.group(1))
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
        reader.join(5)


@needs_root
@needs_tcpdump
@pytest.mark.parametrize("precision", ["micro", "nano"])
def test_replay_of_what_tcpdump_captured_while_the_tutorial_client_ran(
        tmp_path: Path, precision: str) -> None:
    capture = tmp_path / "lo.pcap"
    with serve("--no-tcp") as original:
        with tcpdump_on_lo(capture, original.port, "--time-stamp-precision",
                           precision) as tcpdump_log:
            client = subprocess.run([sys.executable, str(TUTORIAL / "udp_client.py"),
                                     str(original.port)], capture_output=True, timeout=20,
                                    check=False)
        original.stop()
    assert client.stdout == b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
    assert any(line.startswith("6 packets captured") for line in tcpdump_log), tcpdump_log

    with serve("--no-tcp") as fresh:
        done = run_udpkit("bench", f"127.0.0.1:{fresh.port}", "--replay", str(capture),
                          "--replay-port", str(original.port), "--expect", "greeting",
                          "--json")
        _, log = fresh.stop(signal.SIGINT)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["sent"], document["received"], document["lost"]) == (3, 3, 0)
    assert document["wrong"] == document["duplicates"] == 0
    replay = document["replay"]
    assert (replay["format"], replay["link_type"]) == ("pcap", "EN10MB")
    assert (replay["requests"], replay["flows"], replay["other_datagrams"]) == (3, 1, 3)
    assert parse_summary(log)["udp"]["replied"] == 3


@needs_tcpdump
def test_tcpdump_reads_what_the_proxy_recorded_and_the_record_replays(tmp_path: Path) -> None:
    record = tmp_path / "proxy.pcap"
    with serve() as upstream:
        with proxy_recording(upstream.port, record) as (process, port):
            udp = run_udpkit("send", "--port", str(port), "Michael", "Tracy", "Sarah")
            tcp = run_udpkit("send", "--tcp", "--port", str(port), "Ann")
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=15)
        assert udp.stdout == b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
        assert tcp.stdout == b"Hello, Ann!\n"
        summary = json.loads(out)
        replayed = run_udpkit("bench", f"127.0.0.1:{upstream.port}", "--replay", str(record),
                              "--replay-port", str(port), "--expect", "greeting", "--json")
    assert TCPDUMP is not None
    read = subprocess.run([TCPDUMP, "-nn", "-vv", "-A", "-r", str(record)], capture_output=True,
                          timeout=20, check=False)
    assert read.returncode == 0, read.stderr
    text = read.stdout.decode("utf-8", "replace")
    assert b"link-type EN10MB" in read.stderr
    assert text.count(f"> 127.0.0.1.{port}: [udp sum ok] UDP, length") == 3
    assert text.count(f"127.0.0.1.{port} > ") >= 3 + 3
    for name in ("Michael", "Tracy", "Sarah", "Ann"):
        assert f"Hello, {name}!" in text
    for flags in ("Flags [S]", "Flags [S.]", "Flags [P.]", "Flags [F.]"):
        assert flags in text
    assert "incorrect" not in text  # every TCP checksum '(correct)'
    assert "bad udp cksum" not in text
    packets = len(re.findall(r"^\d\d:\d\d:\d\d\.\d+ IP ", text, re.MULTILINE))
    assert summary["pcap"]["packets"] == packets

    assert replayed.returncode == 0, replayed.stderr
    document = json.loads(replayed.stdout)
    assert (document["sent"], document["received"]) == (3, 3)
