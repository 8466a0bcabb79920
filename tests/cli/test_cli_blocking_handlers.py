"""A sync handler that blocks, run as ``udpkit serve`` runs it.

Regression (issue 16, item 5): five 1-second handler calls froze UDP and TCP for every
client, with nothing in the log.  Blocking here waits for a gate file the test creates,
so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.processes import serve

APP = '''
import pathlib, time

GATE = pathlib.Path(__file__).with_name("gate")

def handle(request, peer):
    if request == b"block":
        deadline = time.monotonic() + 20
        while not GATE.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return b"unblocked"
    return b"Hello, " + request + b"!"
'''


def write_app(tmp_path: Path) -> Path:
    (tmp_path / "blocking_app.py").write_text(APP)
    return tmp_path / "gate"


def exchange(port: int, sock: socket.socket, payload: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendto(payload, ("127.0.0.1", port))
    return sock.recv(100)


def test_with_handler_threads_blocked_calls_leave_other_clients_served(tmp_path: Path) -> None:
    gate = write_app(tmp_path)
    with serve("blocking_app:handle", "--app-dir", str(tmp_path), "--handler-threads", "6",
               "--no-tcp") as server:
        blockers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sock in blockers:
                sock.sendto(b"block", ("127.0.0.1", server.port))
            time.sleep(0.2)  # the five are on their threads, waiting for the gate
            assert exchange(server.port, other, b"Sarah") == b"Hello, Sarah!"
            assert not gate.exists()
            gate.touch()
            for sock in blockers:
                sock.settimeout(10)
            assert [sock.recv(100) for sock in blockers] == [b"unblocked"] * 5
        finally:
            gate.touch()
            for sock in (*blockers, other):
                sock.close()
        code, log = server.stop()
    assert code == 0
    assert "handler=0" in log
    assert any("Sync handler on 6 threads" in line for line in server.log)


def test_without_them_the_watchdog_names_the_blocking_handler(tmp_path: Path) -> None:
    gate = write_app(tmp_path)
    with serve("blocking_app:handle", "--app-dir", str(tmp_path), "--stall-warning", "0.2",
               "--no-tcp") as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.sendto(b"block", ("127.0.0.1", server.port))
            server.wait_for_line("stalled", timeout=10)
            gate.touch()
            sock.settimeout(10)
            assert sock.recv(100) == b"unblocked"
        finally:
            gate.touch()
            sock.close()
        server.stop()
    stalled = [line for line in server.log if "stalled" in line]
    assert len(stalled) == 1
    assert "blocking_app.py" in stalled[0]
    assert "in handle" in stalled[0]
    assert any("ran again after a stall" in line for line in server.log)
