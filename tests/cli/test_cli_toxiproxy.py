"""Tier (d): ``udpkit proxy --config`` as a Toxiproxy server, in a subprocess."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.processes import proxy_process, run_udpkit, serve

_READY = re.compile(r"Proxy seed (\d+): (\d+) named proxies, API on (\S+)")


@contextmanager
def toxiproxy_server(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], str, list[str]]]:
    with proxy_process("--control", "127.0.0.1:0", *args, ready=_READY) as (process, match, log):
        yield process, match.group(3), log


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_config_file_declares_udp_and_tcp_proxies_with_toxics(tmp_path: Path) -> None:
    with serve() as server:
        config = tmp_path / "proxies.json"
        config.write_text(json.dumps([
            {"name": "greeting_udp", "listen": "127.0.0.1:0",
             "upstream": f"127.0.0.1:{server.port}", "protocol": "udp",
             "toxics": [{"type": "duplicate", "stream": "downstream"},
                        {"type": "latency", "attributes": {"latency": 20}}]},
            {"name": "greeting_tcp", "listen": "127.0.0.1:0",
             "upstream": f"127.0.0.1:{server.port}"},
        ]))
        with toxiproxy_server("--config", str(config), "--seed", "3") as (process, api, _):
            proxies = get(f"{api}/proxies")
            assert set(proxies) == {"greeting_udp", "greeting_tcp"}
            udp = proxies["greeting_udp"]
            assert udp["protocol"] == "udp"
            assert [t["name"] for t in udp["toxics"]] == ["duplicate_downstream",
                                                          "latency_downstream"]
            port = udp["listen"].rpartition(":")[2]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(b"Michael", ("127.0.0.1", int(port)))
                assert sock.recv(100) == b"Hello, Michael!"
                assert sock.recv(100) == b"Hello, Michael!"  # the duplicate
            tcp_port = proxies["greeting_tcp"]["listen"].rpartition(":")[2]
            sent = run_udpkit("send", "--tcp", "--port", tcp_port, "Tracy")
            assert sent.stdout.decode().strip() == "Hello, Tracy!"
            with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            assert ('udpkit_toxic_events_total{proxy="greeting_udp",'
                    'toxic="duplicate_downstream",type="duplicate",stream="downstream",'
                    'event="duplicated"} 1') in metrics
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        summary = json.loads(out)
        assert summary["seed"] == 3
        greeting = summary["proxies"]["greeting_udp"]
        assert greeting["upstream_stream"]["datagrams_forwarded"] == 1
        assert greeting["downstream_stream"]["bytes_sent"] == 2 * len(b"Hello, Michael!")
        assert greeting["toxics"]["duplicate_downstream"]["duplicated"] == 1
        assert summary["proxies"]["greeting_tcp"]["proxy"]["tcp_opened"] == 1


@pytest.mark.parametrize(("content", "message"), [
    ("[", "config: bad request body"),
    ('[{"name": "a"}]', "config: missing required field: upstream at proxy 1"),
    ('[{"name": "a", "upstream": "127.0.0.1:1", "toxics": [{"type": "loss"}]}]',
     "config: invalid toxic type: loss applies to udp only"),
])
def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path, content: str,
                                             message: str) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(content)
    result = run_udpkit("proxy", "--control", "127.0.0.1:0", "--config", str(config))
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1

