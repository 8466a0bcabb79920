"""Tier (d): every command's failure paths as a user meets them (issue 12).

Each case runs the real CLI in a subprocess and asserts the one error path of
:mod:`udpkit.cli.errors`: ONE line on stderr starting ``udpkit CMD:``, no
``Traceback``, and the documented exit code (2: usage or configuration, 1: a
run that failed, 130: interrupted).  Host names that must not resolve are
under ``.invalid`` (RFC 6761: never resolvable, no DNS traffic beyond the
local resolver).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.processes import UDPKIT, ServeProcess, run_udpkit, serve

UNRESOLVABLE = "no-such-host.invalid"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with serve() as running:
        yield running
        running.stop()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held on 127.0.0.1 for UDP and TCP by this test."""
    for _ in range(20):
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            udp.close()
            continue
        tcp.listen()
        try:
            yield port
        finally:
            tcp.close()
            udp.close()
        return
    raise RuntimeError("no port free for UDP and TCP at once")


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \S+ (DEBUG|INFO) ")


def assert_one_line(result: subprocess.CompletedProcess[bytes], command: str, code: int,
                    needle: str = "") -> str:
    """One error line (start-up log lines of ``serve`` before it aside), no traceback."""
    whole = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in whole, whole
    lines = [line for line in whole.splitlines() if not _LOG_LINE.match(line)]
    assert len(lines) == 1, whole
    err = lines[0]
    assert err.startswith(f"udpkit {command}: "), whole
    assert needle in err, whole
    assert result.returncode == code, whole
    return err


BAD_INPUTS: list[tuple[list[str], int, str]] = [
    # unknown flag
    (["serve", "--bogus"], 2, "no such option '--bogus'"),
    (["send", "--bogus", "x"], 2, "no such option '--bogus'"),
    (["ping", "--bogus"], 2, "no such option '--bogus'"),
    (["bench", "--bogus"], 2, "no such option '--bogus'"),
    (["audit", "--bogus"], 2, "no such option '--bogus'"),
    (["proxy", "--bogus"], 2, "no such option '--bogus'"),
    # bad port
    (["serve", "--port", "abc"], 2, "'abc' is not a port (a number in 0..65535)"),
    (["serve", "--bind", "127.0.0.1:abc"], 2, "port must be a number"),
    (["send", "--port", "abc", "x"], 2, "'abc' is not a port (a number in 1..65535)"),
    (["send", "--to", ":abc", "x"], 2, "port must be a number"),
    (["ping", ":abc"], 2, "port must be a number"),
    (["bench", "127.0.0.1:70000"], 2, "port must be a number"),
    (["audit", ":0"], 2, "port must be a number"),
    (["proxy", "--upstream", "127.0.0.1:abc"], 2, "port must be a number"),
    (["proxy", "--upstream", "127.0.0.1:9", "--control", "127.0.0.1:abc"], 2,
     "port must be a number"),
    (["serve", "--port", "0", "--metrics", "127.0.0.1:abc"], 2, "port must be a number"),
    (["bench", "--concurrency", "abc"], 2, "'abc' is not a whole number"),
    (["serve", "--port", "0", "--busy-poll", "50"], 2, "is not a duration"),
    (["serve", "--port", "0", "--busy-poll", "1s"], 2, "busy-poll duration must be"),
    # unresolvable host
    (["serve", "--host", UNRESOLVABLE, "--port", "0"], 2, "cannot resolve host"),
    (["send", "--host", UNRESOLVABLE, "x"], 2, "cannot resolve host"),
    (["send", "--to", f"{UNRESOLVABLE}:9", "x"], 2, "cannot resolve host"),
    (["ping", UNRESOLVABLE, "-c", "1"], 2, "cannot resolve host"),
    (["bench", UNRESOLVABLE, "-n", "1"], 2, "cannot resolve host"),
    (["audit", UNRESOLVABLE, "--quick"], 2, "cannot resolve host"),
    (["proxy", "--upstream", f"{UNRESOLVABLE}:9"], 2, "cannot resolve"),
    # missing app
    (["serve", "--port", "0", "no_such_module_xyz:app"], 2, "cannot import module"),
    # unwritable output path
    (["bench", "--plot", "/nonexistent/dir/x.png", "-n", "1"], 2, "does not exist"),
    (["bench", "--plot", "/", "-n", "1"], 2, "is a directory"),
    # blank input
    (["send", ""], 2, "is blank"),
    (["send", " "], 2, "is blank"),
    (["send", "--tcp", "exit"], 2, "'exit': over TCP"),
    (["send", "--to", "", "x"], 2, "the target is blank"),
    (["ping", ""], 2, "the target is blank (leave it out for 127.0.0.1:9999)"),
    (["bench", " "], 2, "the target is blank"),
    (["audit", ""], 2, "the target is blank"),
    # no such command: the group's own error takes the same path
    (["nosuch"], 2, "no such command 'nosuch'"),
]


@pytest.mark.parametrize(("args", "code", "needle"), BAD_INPUTS,
                         ids=[" ".join(args) or "blank" for args, _, _ in BAD_INPUTS])
def test_every_command_turns_bad_input_into_one_line(
    args: list[str], code: int, needle: str
) -> None:
    result = run_udpkit(*args)
    command = "" if args[0] == "nosuch" else args[0]
    if not command:
        err = result.stderr.decode()
        assert (result.returncode, len(err.splitlines())) == (2, 1), err
        assert err.startswith("udpkit: ")
        assert needle in err
        assert "Traceback" not in err
        return
    assert_one_line(result, command, code, needle)


def test_a_blank_line_on_stdin_is_refused_before_it_is_sent(server: ServeProcess) -> None:
    """Regression: a blank stdin line was sent, dropped by the server, and cost a
    5 s timeout; now it is refused at once (exit 2) after the lines before it."""
    result = run_udpkit("send", "--port", str(server.port), "-", input=b"Michael\n\nTracy\n")
    assert result.stdout == b"Hello, Michael!\n"
    assert_one_line(result, "send", 2, "line 2 of stdin is blank")


def test_a_module_that_fails_at_import_is_one_line(tmp_path: pathlib.Path) -> None:
    """A syntax error in APP's module is one line, never a traceback.  (The app
    registry turns it into a usage error, exit 2; until then it is exit 1.)"""
    (tmp_path / "badsyntax.py").write_text("def handler(:\n")
    result = run_udpkit("serve", "--port", "0", "--app-dir", str(tmp_path), "badsyntax:handler")
    err = result.stderr.decode()
    last = err.splitlines()[-1]
    assert "Traceback" not in err, err
    assert last.startswith("udpkit serve: "), err
    assert "badsyntax" in last, err
    assert result.returncode in (1, 2)


@pytest.mark.parametrize("listener", ["serve", "serve --workers 2", "serve --metrics",
                                      "proxy --listen", "proxy --control"])
def test_a_taken_port_is_one_line_for_every_listener(listener: str, taken_port: int) -> None:
    """Regression: ``proxy --control`` on a taken port printed a 45-line traceback;
    ``serve`` printed click's usage block for a runtime failure."""
    where = f"127.0.0.1:{taken_port}"
    args = {
        "serve": ["serve", "--port", str(taken_port)],
        "serve --workers 2": ["serve", "--port", str(taken_port), "--workers", "2"],
        "serve --metrics": ["serve", "--port", "0", "--no-udp", "--metrics", where],
        "proxy --listen": ["proxy", "--upstream", "127.0.0.1:9", "--listen", where],
        "proxy --control": ["proxy", "--upstream", "127.0.0.1:9", "--control", where],
    }[listener]
    result = run_udpkit(*args)
    err = result.stderr.decode()
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err, err
    assert result.returncode == 2, err
    assert re.match(rf"udpkit {listener.split()[0]}: cannot (bind|serve) .*{where}", last), err
    assert "address already in use" in last.lower()


def test_bench_checks_the_plot_path_before_sending_anything(server: ServeProcess) -> None:
    """Regression: ``--plot /nonexistent/dir/x.png`` ran the whole bench, then
    failed with a FileNotFoundError traceback."""
    result = run_udpkit("bench", f":{server.port}", "-d", "30", "--warmup", "0",
                        "--plot", "/nonexistent/dir/x.png")
    assert result.stdout == b""
    assert_one_line(result, "bench", 2, "--plot /nonexistent/dir/x.png: directory")


def test_a_udp_reply_that_does_not_match_is_a_protocol_error_at_once(
    server: ServeProcess,
) -> None:
    """Regression: over UDP a reply not matching ``--expect`` was reported as
    ``timeout: no reply ... after 4 attempt(s)`` after the whole deadline."""
    for transport in ([], ["--tcp"]):
        result = run_udpkit("send", "--port", str(server.port), "--expect", "echo",
                            *transport, "Michael")
        err = assert_one_line(result, "send", 1,
                              "protocol: reply b'Hello, Michael!' does not match the request")
        assert "(--expect any accepts whatever the server replies)" in err
        assert "after 1 attempt(s)" in err


def test_audit_quick_finds_the_default_rate_limit() -> None:
    """Regression: ``audit --quick`` said UNLIMITED against a limited server: its
    ramp sent fewer requests than the limiter's burst."""
    with serve("--no-tcp", "--limit-exempt", "none") as limited:
        result = run_udpkit("audit", "--quick", "--sizes", "8", "--no-empty", "--oversize", "",
                            f":{limited.port}")
        limited.stop()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "Rate limit (one source): LIMITED" in out, out


def _interrupt(args: list[str], after: float) -> tuple[int, bytes, bytes]:
    process = subprocess.Popen([*UDPKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        time.sleep(after)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


def test_ctrl_c_during_the_warm_up_prints_no_table(server: ServeProcess) -> None:
    """Regression: Ctrl-C in the warm-up printed a table of ``duration 0.000 s``
    and "no replies: 0 of 0 lost", exit 1."""
    code, out, err = _interrupt(["bench", f":{server.port}", "-d", "60", "--warmup", "60",
                                 "--concurrency", "2"], after=2.0)
    assert out == b""
    assert err.decode().splitlines() == [
        "udpkit bench: interrupted during the warm-up: nothing was measured"]
    assert code == 130


def test_ctrl_c_mid_run_marks_the_table_interrupted(server: ServeProcess) -> None:
    """Regression: Ctrl-C mid-run printed a partial table, exit 0, no word of it."""
    code, out, err = _interrupt(["bench", f":{server.port}", "-d", "60", "--warmup", "0.2",
                                 "--concurrency", "2"], after=2.0)
    assert "INTERRUPTED: partial figures" in " ".join(out.decode().split())
    assert err.decode().splitlines()[-1].startswith("udpkit bench: interrupted after ")
    assert code == 130


def test_ping_takes_a_target_with_defaults(server: ServeProcess) -> None:
    """``udpkit ping 127.0.0.1`` exited 2; a target is now [HOST][:PORT]."""
    bare = run_udpkit("ping", "127.0.0.1", "-c", "1", "--timeout", "0.2")
    assert bare.stdout.decode().startswith("PING 127.0.0.1:9999 (127.0.0.1:9999)")
    assert bare.returncode in (0, 1)  # whatever listens on 9999 here
    port_only = run_udpkit("ping", f":{server.port}", "-c", "1")
    assert port_only.returncode == 0, port_only.stderr.decode()
    assert f"PING 127.0.0.1:{server.port}" in port_only.stdout.decode()


def test_ping_json_and_percentiles(server: ServeProcess) -> None:
    text = run_udpkit("ping", f":{server.port}", "-c", "3", "-i", "0.05")
    assert re.search(r"^rtt p50/p90/p99 = [\d.]+/[\d.]+/[\d.]+ ms$", text.stdout.decode(), re.M)
    result = run_udpkit("ping", f":{server.port}", "-c", "3", "-i", "0.05", "--json")
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["event"] for r in records] == ["start", "reply", "reply", "reply", "summary"]
    summary = records[-1]
    assert (summary["sent"], summary["received"]) == (3, 3)
    rtt = summary["rtt_ms"]
    assert rtt["min"] <= rtt["p50"] <= rtt["p90"] <= rtt["p99"] <= rtt["max"]


def test_environment_variables_are_named_after_the_flags(server: ServeProcess) -> None:
    """Regression: ``--json`` read UDPKIT_SEND_AS_JSON, ``--payload``
    UDPKIT_BENCH_TEMPLATE, TARGET none, and ``--help`` showed none."""
    helps = {cmd: run_udpkit(cmd, "--help").stdout.decode() for cmd in ("send", "bench", "ping")}
    flat = {cmd: " ".join(text.split()) for cmd, text in helps.items()}
    assert "UDPKIT_SEND_JSON" in flat["send"]
    assert "UDPKIT_SEND_AS_JSON" not in flat["send"]
    assert "UDPKIT_BENCH_RATE" in flat["bench"]
    assert "UDPKIT_BENCH_PAYLOAD" in flat["bench"]
    assert "TEMPLATE" not in flat["bench"]
    assert "TARGET from UDPKIT_PING_TARGET" in flat["ping"]
    env = {**os.environ, "UDPKIT_PING_TARGET": f":{server.port}", "UDPKIT_PING_COUNT": "1",
           "UDPKIT_PING_JSON": "1"}
    result = subprocess.run([*UDPKIT, "ping"], capture_output=True, timeout=30, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout.splitlines()[-1])["received"] == 1


def test_every_option_has_help_text() -> None:
    """Regression: ``--log-level`` and ``send --host/--port`` had no help text."""
    import click

    from udpkit.cli import cli

    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.expose_value:
                assert param.help, f"udpkit {command.name} {param.opts[0]} has no help"


def test_serve_bind_sets_host_and_port(taken_port: int) -> None:
    result = run_udpkit("serve", "--bind", f"127.0.0.1:{taken_port}")
    assert_one_line(result, "serve", 2, f"127.0.0.1:{taken_port}")
    both = run_udpkit("serve", "--bind", "127.0.0.1:0", "--port", "0")
    assert_one_line(both, "serve", 2, "--bind sets host and port")
    # The command line wins over the environment, whichever spelling each uses.
    env = {**os.environ, "UDPKIT_SERVE_PORT": "1"}
    over_env = subprocess.run([*UDPKIT, "serve", "--bind", f"127.0.0.1:{taken_port}"],
                              capture_output=True, timeout=30, env=env, check=False)
    assert_one_line(over_env, "serve", 2, f"127.0.0.1:{taken_port}: Address already in use")


def test_json_logs_have_rfc3339_time_and_fields_as_keys() -> None:
    """Regression: ``time`` was ``2026-12-01 12:17:21,730`` and peer, transport and
    size were only inside ``message``."""
    with serve("--access-log", "--log-format", "json", "--no-fast-path") as running:
        assert run_udpkit("send", "--port", str(running.port), "Michael").returncode == 0
        code, _log = running.stop()
    assert code == 0
    entries = [json.loads(line) for line in [*running.log] if line.startswith("{")]
    assert entries, running.log
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert all(rfc3339.match(str(entry["time"])) for entry in entries)
    requests = [entry for entry in entries if entry["event"] == "request"]
    assert len(requests) == 1
    assert requests[0]["transport"] == "udp"
    assert requests[0]["bytes"] == len(b"Michael")
    assert str(requests[0]["peer"]).startswith("127.0.0.1:")


def test_proxy_logs_json() -> None:
    result = run_udpkit("proxy", "--upstream", f"{UNRESOLVABLE}:9", "--log-format", "json")
    assert_one_line(result, "proxy", 2, "cannot resolve")
    help_text = " ".join(run_udpkit("proxy", "--help").stdout.decode().split())
    assert "--log-format [text|json]" in help_text


def test_no_argument_error_shows_a_traceback_even_for_bugs() -> None:
    """An unexpected exception is one line too; UDPKIT_DEBUG=1 shows the traceback."""
    code = ("import sys; from udpkit.cli import cli\n"
            "def boom(config): raise RuntimeError('boom')\n"
            "sys.modules['udpkit.cli.serve'].run_server = boom\n"
            "sys.argv = ['udpkit', 'serve', '--port', '0']\n"
            "cli.main(prog_name='udpkit')\n")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                           check=False)
    err = assert_one_line(plain, "serve", 1, "unexpected error: RuntimeError: boom")
    assert "UDPKIT_DEBUG=1" in err
    debug = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                           check=False, env={**os.environ, "UDPKIT_DEBUG": "1"})
    assert "Traceback" in debug.stderr.decode()


def test_a_reader_that_goes_away_ends_ping_quietly(server: ServeProcess) -> None:
    """``udpkit ping | head -1``: no traceback from inside the event loop, exit 141."""
    process = subprocess.Popen([*UDPKIT, "ping", f":{server.port}", "-i", "0.05", "-c", "50"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b"PING ")
    process.stdout.close()
    try:
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert err == b""
    assert process.returncode == 141


@pytest.mark.parametrize("args", [["serve", "--port", "²"], ["serve", "--workers", "²"],
                                  ["ping", "127.0.0.1:١٢"]])
def test_a_number_is_ascii_digits_on_every_command(args: list[str]) -> None:
    """``²`` passes ``str.isdigit`` and fails ``int``; other scripts' digits pass both."""
    result = run_udpkit(*args)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "Traceback" not in lines[0]
    assert "invalid literal" not in lines[0]
