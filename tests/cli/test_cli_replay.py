"""Tier (d): ``udpkit bench --replay`` as a user runs it: the report, the exits, the errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capture_files import conversation, pcap_file, pcapng_file
from tests.processes import UDPKIT, ServeProcess, run_udpkit, serve
from udpkit.capture.reader import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with serve("--host", "127.0.0.1", "--no-tcp") as running:
        yield running


@pytest.fixture(scope="module")
def greetings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "greetings.pcapng"
    path.write_bytes(pcapng_file(LINKTYPE_LINUX_SLL2, conversation(
        LINKTYPE_LINUX_SLL2, names=(b"Michael", b"Tracy", b"Sarah"))))
    return path


def assert_one_line_error(stderr: bytes, needle: str) -> None:
    message = stderr.decode("utf-8", "replace").strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message
    assert needle in message


def test_replay_prints_what_it_replayed_and_the_table(server: ServeProcess,
                                                      greetings: Path) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(greetings),
                      "--replay-port", "9999", "--speed", "4")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert (f"replay of {greetings} (pcapng, LINUX_SLL2): 3 datagrams to port 9999 from "
            "1 client(s)") in out
    assert (f"replayed against 127.0.0.1:{server.port} at 4x the recorded pace, replies "
            "matched by --expect order") in out
    assert "│ received              │" in out


def test_replay_json_as_fast_as_possible(server: ServeProcess, greetings: Path) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(greetings),
                      "--replay-port", "9999", "--speed", "max", "--expect", "greeting",
                      "--json", "--slo", "loss<1%")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["sent"], document["received"], document["lost"]) == (3, 3, 0)
    assert document["config"]["speed"] == "max"
    assert document["latency_from"] == "send time"
    assert document["slo"][0]["passed"] is True


def test_a_failed_threshold_exits_3(server: ServeProcess, greetings: Path) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(greetings),
                      "--replay-port", "9999", "--speed", "max", "--slo", "throughput>1e12")
    assert done.returncode == 3
    assert_one_line_error(done.stderr, "1 of 1 thresholds failed: throughput>1e12")


def test_no_reply_exits_1(greetings: Path, tmp_path: Path) -> None:
    with serve("--host", "127.0.0.1", "--no-tcp", "echo") as echo:
        # echo's replies are not greetings: every request times out, every reply is wrong.
        done = run_udpkit("bench", f"127.0.0.1:{echo.port}", "--replay", str(greetings),
                          "--replay-port", "9999", "--speed", "max", "--expect", "greeting",
                          "--timeout", "0.3", "--json")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert (document["sent"], document["lost"], document["wrong"]) == (3, 3, 3)
    assert_one_line_error(done.stderr, "no replies: 3 of 3 requests lost")


@pytest.mark.parametrize(("contents", "args", "needle"), [
    (b"not a capture", [], "not a pcap or pcapng file"),
    (pcap_file(LINKTYPE_ETHERNET, conversation())[:-3], [], "truncated or malformed"),
    (pcap_file(LINKTYPE_ETHERNET, conversation()), ["--replay-port", "7"],
     "no UDP datagram to port 7 in the file (datagrams by destination port: 9999 (2), "
     "40000 (2); choose one with --replay-port)"),
    (pcap_file(LINKTYPE_ETHERNET, conversation()), ["--tcp"], "--tcp cannot be used with"),
    (pcap_file(LINKTYPE_ETHERNET, conversation()), ["--rate", "10"],
     "--rate cannot be used with --replay"),
    (pcap_file(LINKTYPE_ETHERNET, conversation()), ["--speed", "0"], "--speed must be"),
], ids=["not-a-capture", "truncated", "no-datagram-to-port", "tcp", "rate", "speed"])
def test_what_cannot_be_replayed_is_one_line_and_exit_2(
        tmp_path: Path, contents: bytes, args: list[str], needle: str) -> None:
    path = tmp_path / "file.pcap"
    path.write_bytes(contents)
    done = run_udpkit("bench", "127.0.0.1:9", "--replay", str(path), *args)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, needle)
    assert done.stdout == b""


def test_a_missing_file_and_replay_flags_without_replay_exit_2(tmp_path: Path) -> None:
    missing = run_udpkit("bench", "127.0.0.1:9", "--replay", str(tmp_path / "nothing.pcap"))
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "nothing.pcap: No such file or directory")
    alone = run_udpkit("bench", "127.0.0.1:9", "--speed", "2")
    assert alone.returncode == 2
    assert_one_line_error(alone.stderr, "--speed and --replay-port need --replay FILE")


def test_proxy_pcap_into_a_directory_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    done = run_udpkit("proxy", "--upstream", "127.0.0.1:9", "--pcap",
                      str(tmp_path / "no" / "such.pcap"), timeout=20)
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "--pcap")


def test_a_closed_port_exits_1(greetings: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_udpkit("bench", f"127.0.0.1:{port}", "--replay", str(greetings),
                      "--replay-port", "9999", "--speed", "max")
    assert done.returncode == 1
    assert_one_line_error(done.stderr, "refused: port closed")


def test_requests_limits_the_replay(server: ServeProcess, greetings: Path) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(greetings),
                      "--replay-port", "9999", "-n", "2", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["sent"], document["received"], document["replay"]["requests"]) == (2, 2, 2)


def test_ctrl_c_stops_sending_and_still_reports(server: ServeProcess, tmp_path: Path) -> None:
    path = tmp_path / "slow.pcap"
    names = tuple(b"n%d" % index for index in range(60))
    path.write_bytes(pcap_file(LINKTYPE_ETHERNET, conversation(names=names, gap=0.5)))
    process = subprocess.Popen(
        [*UDPKIT, "bench", f"127.0.0.1:{server.port}", "--replay", str(path), "--replay-port",
         "9999", "--expect", "greeting"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"replay of ")  # 30 s of recorded pace
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert b"INTERRUPTED" in out  # the table of what was replayed before Ctrl-C
    # On a loaded machine a send may leave late: its warning is not the error line.
    late = b"udpkit bench: warning: the replay fell behind"
    err = b"".join(line for line in err.splitlines(keepends=True) if not line.startswith(late))
    assert_one_line_error(err, "interrupted after")


def test_replay_json_stream_writes_its_intervals_then_the_summary(
        server: ServeProcess, tmp_path: Path) -> None:
    """``--json-stream`` with ``--replay`` was refused; now the replay's intervals come as
    JSON Lines as they close (the line schema of bench/stream.py), then its document."""
    path = tmp_path / "spread.pcap"  # 8 requests 50 ms apart: several intervals
    path.write_bytes(pcap_file(LINKTYPE_ETHERNET, conversation(
        names=tuple(b"n%d" % i for i in range(8)), gap=0.05)))
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(path),
                      "--replay-port", "9999", "--json-stream", "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    *intervals, summary = lines
    assert summary["type"] == "summary"
    assert summary["mode"] == "replay"
    assert len(intervals) >= 3
    assert {line["type"] for line in intervals} == {"interval"}
    assert [line["index"] for line in intervals] == list(range(len(intervals)))
    assert {line["width_s"] for line in intervals} == {0.1}
    for name in ("sent", "received", "lost"):
        assert sum(line[name] for line in intervals) == summary[name], name
    assert summary["sent"] == 8
    both = run_udpkit("bench", f"127.0.0.1:{server.port}", "--replay", str(path),
                      "--json-stream", "--json")
    assert both.returncode == 2
    assert_one_line_error(both.stderr, "--json and --json-stream: choose one")
