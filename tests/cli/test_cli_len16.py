"""Tier (d): len16 TCP framing from the command line: ``serve --tcp-framing len16`` and
``send``, ``ping`` and ``bench`` with ``--tcp --tcp-framing len16``, in subprocesses."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from tests.processes import ServeProcess, run_udpkit, serve


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    """``udpkit serve --tcp-framing len16`` (greeting) on a free port of 127.0.0.1."""
    with serve("--host", "127.0.0.1", "--tcp-framing", "len16") as running:
        yield running


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def test_send_over_len16_where_exit_is_a_name_like_any() -> None:
    with serve("--tcp-framing", "len16") as server:
        done = run_udpkit("send", "--tcp", "--tcp-framing", "len16", "--port", str(server.port),
                          "Michael", "exit", "Sarah")
        code, log = server.stop(signal.SIGINT)
    assert (done.returncode, done.stdout) == (0, b"Hello, Michael!\nHello, exit!\nHello, Sarah!\n")
    assert code == 0
    assert "TCP received=3 replied=3" in log


def test_send_with_line_framing_against_len16_fails_in_one_line(server: ServeProcess) -> None:
    """A framing mismatch is a failed request, said in one line, not a hang."""
    done = run_udpkit("send", "--tcp", "--timeout", "1", "--port", str(server.port), "Michael")
    assert done.returncode == 1
    message = text(done.stderr).strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1, message


def test_ping_over_len16(server: ServeProcess) -> None:
    done = run_udpkit("ping", f"127.0.0.1:{server.port}", "--tcp", "--tcp-framing", "len16",
                      "-c", "3", "-i", "0.05", "--json")
    assert done.returncode == 0, text(done.stderr)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["seq"] for r in records if r.get("event") == "reply"] == [0, 1, 2]
    assert records[-1]["received"] == 3


def test_bench_over_len16(server: ServeProcess) -> None:
    done = run_udpkit("bench", f"127.0.0.1:{server.port}", "--tcp", "--tcp-framing", "len16",
                      "--connections", "2", "--depth", "4", "-d", "0.5", "--warmup", "0.1",
                      "--json")
    assert done.returncode == 0, text(done.stderr)
    document = json.loads(done.stdout)
    assert document["received"] > 0
    assert document["received"] + document["lost"] == document["sent"]
    assert document["wrong"] == 0


def test_framing_choices_on_every_command() -> None:
    for command in ("serve", "send", "ping", "bench"):
        assert b"len16" in run_udpkit(command, "--help").stdout, command
    raw = run_udpkit("bench", "--tcp", "--tcp-framing", "raw", "-n", "1")
    assert raw.returncode == 2
    assert "Traceback" not in text(raw.stderr)
