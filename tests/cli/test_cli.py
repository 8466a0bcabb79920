"""Tier (d): the command line as a user runs it, in subprocesses."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

import pytest

from tests.processes import run_udpkit, serve


def test_serve_and_send_the_tutorials_names_over_udp_and_tcp() -> None:
    with serve("--access-log") as server:
        udp = run_udpkit("send", "--port", str(server.port), "Michael", "Tracy", "Sarah")
        tcp = run_udpkit("send", "--tcp", "--port", str(server.port), "Michael", "Tracy", "Sarah")
        code, log = server.stop(signal.SIGINT)
    expected = b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
    assert (udp.returncode, udp.stdout) == (0, expected)
    assert (tcp.returncode, tcp.stdout) == (0, expected)
    assert code == 0
    assert f"Bind UDP on 127.0.0.1:{server.port}..." in "\n".join(server.log)
    assert log.count("Received from 127.0.0.1:") == 6
    assert "Summary: UDP received=3 replied=3" in log
    assert "TCP received=3 replied=3" in log


def test_sigterm_prints_the_summary_and_exits_zero() -> None:
    with serve() as server:
        run_udpkit("send", "--port", str(server.port), "x")
        code, log = server.stop(signal.SIGTERM)
    assert code == 0
    assert "Received SIGTERM, shutting down gracefully" in log
    assert "Summary: UDP received=1 replied=1" in log


def test_send_json_and_stdin() -> None:
    with serve() as server:
        result = run_udpkit("send", "--json", "--port", str(server.port), "-",
                            input=b"Michael\nTracy\r\n")
        server.stop()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0
    assert [r["reply"] for r in records] == ["Hello, Michael!", "Hello, Tracy!"]
    assert all(r["transport"] == "udp" and r["attempts"] == 1 for r in records)
    assert all(isinstance(r["rtt_ms"], float) and r["rtt_ms"] >= 0 for r in records)


def test_send_to_a_closed_port_says_refused_and_exits_one(closed_udp_port: int) -> None:
    result = run_udpkit("send", "--port", str(closed_udp_port), "--timeout", "20", "x")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "refused" in err
    assert f"127.0.0.1:{closed_udp_port}" in err
    assert "1 attempt(s)" in err
    assert "Traceback" not in err


def test_send_timeout_names_address_attempts_and_time() -> None:
    # A UDP-only server that never answers: max-request 1 drops "xx" as oversize.
    with serve("--no-tcp", "--max-request", "1") as server:
        result = run_udpkit("send", "--port", str(server.port), "--timeout", "0.3",
                            "--retries", "1", "--json", "xx")
        server.stop()
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("udpkit send: 'xx': timeout: no reply over udp")
    assert "after 2 attempt(s) in" in err
    record = json.loads(result.stdout)
    assert record["reply"] is None
    assert record["error"] == "timeout"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("send",), "missing argument"),
        (("send", "--port", "0", "x"), "invalid value for '--port'"),
        (("send", "--host", "no-such-host.invalid", "x"), "cannot resolve host"),
        (("send", "--tcp", "exit"), "'exit': over TCP it closes the connection"),
        (("serve", "--max-request", "0"), "invalid value for '--max-request'"),
        (("serve", "no_such_module_xyz:app"), "cannot import module"),
        (("serve", "--no-udp", "--no-tcp"), "nothing to serve"),
    ],
)
def test_bad_usage_exits_two_with_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = run_udpkit(*args)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert message in err
    assert "Traceback" not in err


def test_serve_on_a_port_in_use_fails_clearly() -> None:
    with serve() as server:
        result = run_udpkit("serve", "--port", str(server.port))
        server.stop()
    assert result.returncode == 2
    assert "cannot bind" in result.stderr.decode()


def test_environment_variables_mirror_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve() as server:
        monkeypatch.setenv("UDPKIT_SEND_PORT", str(server.port))
        result = run_udpkit("send", "Env")
        server.stop()
    assert result.stdout == b"Hello, Env!\n"


def test_user_handler_by_import_string(tmp_path: pathlib.Path) -> None:
    (tmp_path / "shout_app.py").write_text(
        "async def shout(request, peer):\n    return request.upper() + b' via ' + "
        "peer.transport.encode()\n"
    )
    with serve("shout_app:shout", "--app-dir", str(tmp_path)) as server:
        udp = run_udpkit("send", "--expect", "any", "--port", str(server.port), "hi")
        tcp = run_udpkit("send", "--tcp", "--expect", "any", "--port", str(server.port), "hi")
        server.stop()
    assert udp.stdout == b"HI via udp\n"
    assert tcp.stdout == b"HI via tcp\n"


def test_version_and_help() -> None:
    assert run_udpkit("--version").stdout.startswith(b"udpkit, version")
    assert b"--tcp-framing" in run_udpkit("serve", "--help").stdout


def test_second_signal_skips_the_graceful_wait(tmp_path: pathlib.Path) -> None:
    """The first SIGTERM waits for a stuck handler; the second one exits at once."""
    (tmp_path / "stuck_app.py").write_text(
        "import asyncio\n\nasync def stuck(request, peer):\n    await asyncio.sleep(60)\n"
    )
    with serve("stuck_app:stuck", "--app-dir", str(tmp_path), "--graceful-timeout", "60",
               "--no-tcp") as server:
        run_udpkit("send", "--port", str(server.port), "--timeout", "0.2", "--retries", "0",
                   "--expect", "any", "x")
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            server.process.wait(timeout=1.0)  # still draining: the handler is stuck
        code, _ = server.stop(signal.SIGTERM, timeout=10)
        waited = time.monotonic() - started
    assert waited < 30  # far less than the 60 s graceful timeout
    assert "Received SIGTERM again, exiting now." in "\n".join(server.log)
    assert code in (0, -signal.SIGTERM)
