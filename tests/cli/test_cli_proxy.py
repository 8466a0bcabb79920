"""Tier (d): ``udpkit proxy`` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.processes import proxy_process, run_udpkit, serve

_READY = re.compile(r"Proxy (\S+) on (\S+):(\d+) -> \S+ \(seed (\d+)\)(?:, control on (\S+))?")


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    port: int = 0
    seed: int = 0
    control: str | None = None
    log: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, dict[str, object]]:
        """Signal it; return its exit code and the JSON summary it printed."""
        self.process.send_signal(sig)
        out, _ = self.process.communicate(timeout=15)
        summary: dict[str, object] = json.loads(out)
        return self.process.returncode, summary


@contextmanager
def proxy(*args: str) -> Iterator[ProxyProcess]:
    with proxy_process("--listen", "127.0.0.1:0", *args, ready=_READY) as (process, match, log):
        yield ProxyProcess(process, port=int(match.group(3)), seed=int(match.group(4)),
                           control=match.group(5), log=log)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_send_through_the_proxy_and_get_a_json_summary(sig: int) -> None:
    with serve() as server, proxy("--upstream", f"127.0.0.1:{server.port}", "--seed", "5",
                                  "--loss", "10%", "--delay", "5ms",
                                  "--down", "loss=0,duplicate=1") as running:
        sent = run_udpkit("send", "--port", str(running.port), "Michael", "Tracy", "Sarah")
        tcp = run_udpkit("send", "--tcp", "--port", str(running.port), "Michael")
        code, summary = running.stop(sig)
    assert sent.returncode == 0
    assert sent.stdout == b"Hello, Michael!\nHello, Tracy!\nHello, Sarah!\n"
    assert tcp.stdout == b"Hello, Michael!\n"
    assert code == 0
    assert running.seed == summary["seed"] == 5
    impairments = summary["impairments"]
    assert isinstance(impairments, dict)
    assert impairments["up"]["loss"] == 0.1
    assert impairments["down"] == {**impairments["up"], "loss": 0.0, "duplicate": 1.0}
    stats = summary["stats"]
    assert isinstance(stats, dict)
    up, down = stats["up"], stats["down"]
    assert up["received"] == up["forwarded"] + up["dropped"] >= 3
    assert down["duplicated"] == down["forwarded"]
    assert stats["proxy"]["tcp_opened"] == 1


def test_the_control_api_from_the_command_line() -> None:
    with serve() as server, proxy("--upstream", f"127.0.0.1:{server.port}",
                                  "--control", "127.0.0.1:0", "--no-tcp") as running:
        assert running.control is not None
        request = urllib.request.Request(
            running.control + "/impairments", method="PUT",
            data=json.dumps({"both": {"delay": "1ms"}}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["down"]["delay"] == 0.001
        assert run_udpkit("send", "--port", str(running.port), "x").returncode == 0
        with urllib.request.urlopen(running.control + "/stats", timeout=10) as response:
            assert json.load(response)["up"]["delayed"] == 1
        code, _ = running.stop()
    assert code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--upstream", "127.0.0.1:9", "--loss", "1.5"], "'--loss'"),
    (["--upstream", "127.0.0.1:9", "--loss", "lots"], "not a probability"),
    (["--upstream", "127.0.0.1:9", "--delay", "50"], "not a duration"),
    (["--upstream", "127.0.0.1:9", "--rate", "fast"], "not a rate"),
    (["--upstream", "127.0.0.1:9", "--burst-loss", "0.1"], "p/r"),
    (["--upstream", "127.0.0.1:9", "--up", "los=0.1"], "unknown impairment 'los'"),
    (["--upstream", "127.0.0.1:9", "--down", "loss"], "not key=value"),
    (["--upstream", "127.0.0.1"], "not HOST:PORT"),
    (["--upstream", "127.0.0.1:0"], "port must be"),
    (["--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:70000"], "port must be"),
    (["--upstream", "127.0.0.1:9", "--no-udp", "--no-tcp"], "nothing to proxy"),
    (["--upstream", "nonexistent.invalid:9"], "cannot resolve"),
    (["--upstream", "127.0.0.1:9", "--seed", "-1"], "'--seed'"),
    (["--upstream", "127.0.0.1:9", "--bogus"], "no such option"),
    (["--loss", "10%"], "need --upstream"),  # without it: a Toxiproxy server, no flags
])
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run_udpkit("proxy", *args, timeout=30)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("udpkit proxy: ")
    assert message in err
    assert "Traceback" not in err
    assert result.stdout == b""


def test_bench_slo_exit_code_flips_when_the_proxy_slows_the_server() -> None:
    """What a CI job relies on (issue 14): the same `bench --slo` passes against the
    server and fails, exit 3, once a proxy adds 20 ms each way."""
    slos = ["--slo", "p50<30ms", "--slo", "loss<=50%"]
    common = ["--requests", "200", "--concurrency", "4", "--warmup", "0.1", "--no-progress"]
    with serve() as server:
        direct = run_udpkit("bench", f"127.0.0.1:{server.port}", *common, *slos, "--json")
        with proxy("--upstream", f"127.0.0.1:{server.port}", "--delay", "20ms") as running:
            slowed = run_udpkit("bench", f"127.0.0.1:{running.port}", *common, *slos)
    assert direct.returncode == 0, direct.stderr
    document = json.loads(direct.stdout)
    assert [item["passed"] for item in document["slo"]] == [True, True]
    assert slowed.returncode == 3, slowed.stderr
    out = slowed.stdout.decode()
    assert "SLO p50<30ms: FAILED (measured" in out
    assert "SLO loss<=50%: passed" in out
    assert slowed.stderr.decode().strip() == (
        "udpkit bench: 1 of 2 thresholds failed: p50<30ms")


def test_a_bad_slo_fails_before_any_request_is_sent() -> None:
    with serve() as server:
        result = run_udpkit("bench", f"127.0.0.1:{server.port}", "--slo", "p99<5kg")
        code, log = server.stop()
    assert code == 0
    assert result.returncode == 2
    assert b"a latency is in us, ms or s" in result.stderr
    assert "received=0" in log  # nothing reached the server
